"""``--guide gold``: the oracle row, BoN and CBS guided by the world's gold reward itself."""

import pytest
from harness_toyworld import make_world

from w2s_eval.harness.compare import run_compare
from w2s_eval.harness.oracle import oracle_engine
from w2s_eval.harness.plan import build_world_engine, make_run_config
from w2s_eval.harness.records import RECORDS_FILE, read_records


@pytest.fixture(scope="module")
def world(toy_dirs):
    return make_world(toy_dirs, max_new_tokens=6)


def test_gold_guided_bon_picks_the_gold_best_and_records_the_guide(world, tmp_path):
    cfg = make_run_config(world, "base,bon:n=4,cbs:w=2,k=2,l=3", 2, 1, guide="gold", device="cpu", batch_size=2)
    assert cfg.guide == "gold" and cfg.identity()["guide"] == "gold"
    run_compare(world, cfg, tmp_path / "run", progress=False)
    records, _ = read_records(tmp_path / "run" / RECORDS_FILE)
    bon = [r for r in records if r["method"] == "bon:n=4"]
    assert len(bon) == 2
    for r in bon:  # the search's score of the chosen response is its gold reward
        assert r["guide_score"] == pytest.approx(r["gold"]) and r["guide_score_source"] == "search"
    # another guide is another run: the implicit-guided config is refused in the same directory
    other = make_run_config(world, "base,bon:n=4,cbs:w=2,k=2,l=3", 2, 1, device="cpu", batch_size=2)
    with pytest.raises(ValueError, match="guide"):
        run_compare(world, other, tmp_path / "run", progress=False)


def test_oracle_engine_keeps_the_models_and_scores_by_gold(world):
    engine = build_world_engine(world, device="cpu")
    oracle = oracle_engine(engine, world)
    assert oracle.policy is engine.policy and oracle.tuned == engine.tuned and oracle.untuned is engine.untuned
    got = oracle.scorer(["a", "b"], ["eee", "x"], [True, True]).tolist()
    assert got == world.gold(["a", "b"], ["eee", "x"])
    gold_engine = build_world_engine(world, guide="gold", device="cpu")
    assert [g.kind for g in gold_engine.guides] == ["custom"]
    with pytest.raises(ValueError, match="--guide gold does not use"):
        build_world_engine(world, guide="gold", beta=2.0, device="cpu")
