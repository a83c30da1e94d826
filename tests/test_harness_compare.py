"""The comparison harness on a toy world: records, seeds, resume, truncation, mixed configs, --chat-template."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
from harness_toyworld import PROMPTS, InterruptingGold, make_world

from w2s_eval.cli import build_parser
from w2s_eval.harness.compare import run_compare, strong_prompts
from w2s_eval.harness.plan import build_world_engine, make_run_config
from w2s_eval.harness.records import CONFIG_FILE, RECORDS_FILE, read_records, record_key

METHODS = "base,bon:n=3,eft:beta=1,cbs:w=2,k=2,l=3"
N_PROMPTS, SEEDS = 3, 2


@pytest.fixture(scope="module")
def world(toy_dirs):
    return make_world(toy_dirs, max_new_tokens=6)


@pytest.fixture(scope="module")
def engine(world):
    return build_world_engine(world, device="cpu")


def _cfg(world, **kw):
    return make_run_config(world, METHODS, N_PROMPTS, SEEDS, device="cpu", batch_size=2, **kw)


@pytest.fixture(scope="module")
def ref_run(world, engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    outcome = run_compare(world, _cfg(world), out, engine=engine, progress=False)
    assert outcome.n_new == outcome.n_planned == N_PROMPTS * 4 * SEEDS
    return out


def _records(run_dir):
    records, tail = read_records(run_dir / RECORDS_FILE)
    assert tail is None
    return records


def test_records_hold_everything_and_methods_share_prompts_and_seeds(ref_run, world):
    records = _records(ref_run)
    keys = [record_key(r) for r in records]
    assert len(keys) == len(set(keys)) == N_PROMPTS * 4 * SEEDS
    pairs = {}
    for r in records:
        pairs.setdefault(r["method"], set()).add((r["prompt_id"], r["seed"]))
    assert set(pairs) == {"base", "bon:n=3", "eft:beta=1", "cbs:w=2,k=2,l=3"}
    expected = {(f"p{i}", s) for i in range(N_PROMPTS) for s in range(SEEDS)}
    assert all(v == expected for v in pairs.values())
    for r in records:
        assert r["prompt"] == PROMPTS[int(r["prompt_id"][1:])]
        assert r["gold"] == r["response"].count("e") and r["judge"] == r["response"].count(" ")
        assert r["guide_score"] is not None
        assert r["guide_score_source"] == ("rescored" if r["method"] in ("base", "eft:beta=1") else "search")
        assert r["config"]["sampling"]["max_new_tokens"] == 6 and r["config"]["seed"] == r["seed"]
        assert r["config_hash"] == records[0]["config_hash"]
        assert r["versions"]["torch"] == torch.__version__
        assert r["strong_tokens"] > 0 and r["wall_time_s"] > 0
    by = {(r["method"], r["prompt_id"], r["seed"]): r for r in records}
    assert by[("bon:n=3", "p0", 0)]["samples"] == 3 and by[("bon:n=3", "p0", 0)]["budget"] == 3
    assert by[("base", "p0", 0)]["samples"] == 1 and by[("base", "p0", 0)]["guide_tokens"] == 0
    assert by[("eft:beta=1", "p0", 0)]["guide_tokens"] > 0  # EFT's guides run at every strong token
    assert by[("cbs:w=2,k=2,l=3", "p0", 0)]["budget"] == 4


def test_seed_of_a_record_is_the_sampling_seed(ref_run, world, engine):
    records = {(r["method"], r["prompt_id"], r["seed"]): r for r in _records(ref_run)}
    for method in ("base", "bon:n=3"):
        for seed in range(SEEDS):
            [res] = engine.generate([PROMPTS[1]], method, replace(world.sampling, seed=seed))
            assert records[(method, "p1", seed)]["response"] == res.text
    # different seeds give different samples somewhere
    assert any(
        records[("base", f"p{i}", 0)]["response"] != records[("base", f"p{i}", 1)]["response"] for i in range(N_PROMPTS)
    )


def test_guide_score_is_the_guide_on_the_final_response(ref_run, engine):
    for r in _records(ref_run):
        if r["method"] in ("bon:n=3", "base"):
            value = float(engine.scorer([r["prompt"]], [r["response"]], [r["ended"]])[0])
            assert value == pytest.approx(r["guide_score"], abs=1e-4)


def test_interrupted_run_keeps_records_and_resumes(tmp_path, toy_dirs, world, engine, ref_run):
    out = tmp_path / "run"
    flaky = make_world(toy_dirs, gold=InterruptingGold(after=4), max_new_tokens=6)  # base: 2 seeds x prompts 0-1
    with pytest.raises(KeyboardInterrupt):
        run_compare(flaky, _cfg(flaky), out, engine=engine, progress=False)
    first = (out / RECORDS_FILE).read_text().splitlines()
    assert len(first) == 4  # two groups of two prompts were recorded before the interrupt
    outcome = run_compare(world, _cfg(world), out, engine=engine, progress=False)
    assert outcome.n_before == 4 and outcome.n_new == N_PROMPTS * 4 * SEEDS - 4
    lines = (out / RECORDS_FILE).read_text().splitlines()
    assert lines[:4] == first  # kept as they were
    records = _records(out)
    assert len({record_key(r) for r in records}) == len(records) == N_PROMPTS * 4 * SEEDS
    # the resumed run gives the same responses as the uninterrupted one
    ref = {record_key(r): r["response"] for r in _records(ref_run)}
    assert {record_key(r): r["response"] for r in records} == ref
    again = run_compare(world, _cfg(world), out, engine=engine, progress=False)
    assert again.n_new == 0


def test_truncated_last_line_is_recomputed(tmp_path, world, engine, ref_run):
    out = tmp_path / "run"
    shutil.copytree(ref_run, out)
    path = out / RECORDS_FILE
    text = path.read_text()
    body, last = text.rstrip("\n").rsplit("\n", 1)
    path.write_text(body + "\n" + last[: len(last) // 2])
    outcome = run_compare(world, _cfg(world), out, engine=engine, progress=False)
    assert outcome.truncated and outcome.n_new == 1
    records = _records(out)
    assert len({record_key(r) for r in records}) == len(records) == N_PROMPTS * 4 * SEEDS
    assert record_key(records[-1]) == record_key(json.loads(last))
    assert (out / "records.truncated.txt").read_text().rstrip("\n") == last[: len(last) // 2]


def test_a_different_config_is_refused_naming_the_field(tmp_path, toy_dirs, world, engine, ref_run):
    out = tmp_path / "run"
    shutil.copytree(ref_run, out)
    before = (out / RECORDS_FILE).read_text()
    with pytest.raises(ValueError, match=r"sampling\.temperature is 1\.0 there but 0\.5 now"):
        run_compare(world, _cfg(world, temperature=0.5), out, engine=engine, progress=False)
    rebuilt = make_world(toy_dirs, max_new_tokens=6, manifest={"name": "toy", "kind": "toy", "rebuilt": True})
    with pytest.raises(ValueError, match="world_fingerprint"):
        run_compare(rebuilt, _cfg(rebuilt), out, engine=engine, progress=False)
    with pytest.raises(ValueError, match="guide"):
        run_compare(world, _cfg(world, guide="rm", temperature=None), out, engine=engine, progress=False)
    assert (out / RECORDS_FILE).read_text() == before
    # more seeds or methods with the same settings extend the run
    more = make_run_config(world, "base,bon:n=2", 1, "0,7", device="cpu", batch_size=2)
    outcome = run_compare(world, more, out, engine=engine, progress=False)
    assert outcome.n_new == 3  # base/p0/7, bon:n=2/p0/0, bon:n=2/p0/7
    assert json.loads((out / "config.json").read_text())["grid"]["seeds"] == [0, 1, 7]


def test_bad_input_is_reported_before_generation(tmp_path, toy_dirs, world, engine):
    with pytest.raises(ValueError, match="more than the 6 evaluation prompts"):
        make_run_config(world, "base", 7, 1)
    no_rm = make_world({k: v for k, v in toy_dirs.items() if k != "rm"})
    with pytest.raises(ValueError, match="no reward model"):
        make_run_config(no_rm, "bon:n=2", 2, 1, guide="rm")
    with pytest.raises(ValueError, match="unknown sampling setting"):
        make_run_config(world, "base", 2, 1, temprature=0.3)
    bad_gold = make_world(toy_dirs, gold=lambda p, r: [float("nan")] * len(r))
    with pytest.raises(ValueError, match="gold function returned nan"):
        run_compare(
            bad_gold,
            make_run_config(bad_gold, "base", 1, 1, device="cpu"),
            tmp_path / "r",
            engine=engine,
            progress=False,
        )
    assert read_records(tmp_path / "r" / RECORDS_FILE) == ([], None)


# --chat-template: the strong model reads the prompt through its chat template; guides, gold and judge read the
# plain prompt; the setting is part of the identity; a strong model without a template is refused.

CHAT_METHODS = "base,cbs:w=2,k=2,l=3"


def _chat_cfg(world, **kw):
    return make_run_config(world, CHAT_METHODS, 2, 1, device="cpu", batch_size=2, **kw)


def test_strong_model_reads_the_template_and_guides_gold_judge_the_plain_prompt(tmp_path, world, engine):
    cfg = _chat_cfg(world, chat_template=True)
    run_compare(world, cfg, tmp_path / "chat", engine=engine, progress=False)
    records, _ = read_records(tmp_path / "chat" / RECORDS_FILE)
    plain = [text for _, text in world.prompts[:2]]
    templated = strong_prompts(engine, cfg, plain)
    tok = engine.policy.lm.tokenizer
    assert templated == [
        tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in plain
    ]
    assert all(t != p and p in t for t, p in zip(templated, plain))
    for spec in ("base", "cbs:w=2,k=2,l=3"):
        want = engine.generate(templated, spec, replace(cfg.sampling, seed=0), batch_size=2, guide_prompts=plain)
        got = sorted((r for r in records if r["method"] == spec), key=lambda r: plain.index(r["prompt"]))
        assert [r["prompt"] for r in got] == plain
        assert [r["response"] for r in got] == [w.text for w in want]
        assert [r["gold"] for r in got] == world.gold(plain, [w.text for w in want])
        assert all(r["config"]["chat_template"] is True for r in got)
    plain_cfg = _chat_cfg(world)
    assert "chat_template" not in plain_cfg.identity() and plain_cfg.config_hash != cfg.config_hash
    with pytest.raises(ValueError, match="chat_template"):
        run_compare(world, plain_cfg, tmp_path / "chat", engine=engine, progress=False)


def test_a_strong_model_without_a_chat_template_is_refused_before_anything_is_written(tmp_path, world):
    engine = build_world_engine(world, device="cpu")
    engine.policy.lm.tokenizer.chat_template = None  # a base model's tokenizer
    with pytest.raises(ValueError, match="--chat-template: the strong model .* has no chat template"):
        run_compare(world, _chat_cfg(world, chat_template=True), tmp_path / "run", engine=engine, progress=False)
    assert not (tmp_path / "run" / CONFIG_FILE).exists()


def test_the_flag_is_on_the_compare_and_demo_command_lines():
    parser = build_parser("compare")
    for command in ("compare", "demo"):
        args = parser.parse_args(
            [command, "--chat-template"] + (["--world", "toy", "--out", "x"] if command == "compare" else [])
        )
        assert args.chat_template is True
        assert (
            parser.parse_args(
                [command] + (["--world", "toy", "--out", "x"] if command == "compare" else [])
            ).chat_template
            is False
        )
