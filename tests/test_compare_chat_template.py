"""compare --chat-template: the strong model reads the prompt through its chat template; guides, gold and judge
read the plain prompt; the setting is part of the run's identity; a strong model without a template is refused."""

from dataclasses import replace

import pytest
from harness_toyworld import make_world

from w2s_eval.cli import build_parser
from w2s_eval.harness.compare import build_world_engine, make_run_config, run_compare, strong_prompts
from w2s_eval.harness.records import CONFIG_FILE, RECORDS_FILE, read_records

METHODS = "base,cbs:w=2,k=2,l=3"


@pytest.fixture(scope="module")
def world(toy_dirs):
    return make_world(toy_dirs, max_new_tokens=5)


@pytest.fixture(scope="module")
def engine(world):
    return build_world_engine(world, device="cpu")


def _cfg(world, **kw):
    return make_run_config(world, METHODS, 2, 1, device="cpu", batch_size=2, **kw)


def test_strong_model_reads_the_template_and_guides_gold_judge_the_plain_prompt(tmp_path, world, engine):
    cfg = _cfg(world, chat_template=True)
    run_compare(world, cfg, tmp_path / "chat", engine=engine, progress=False)
    records, _ = read_records(tmp_path / "chat" / RECORDS_FILE)
    plain = [text for _, text in world.prompts[:2]]
    templated = strong_prompts(engine, cfg, plain)
    tok = engine.policy.lm.tokenizer
    assert templated == [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                 add_generation_prompt=True) for t in plain]
    assert all(t != p and p in t for t, p in zip(templated, plain))
    for spec in ("base", "cbs:w=2,k=2,l=3"):
        want = engine.generate(templated, spec, replace(cfg.sampling, seed=0), batch_size=2, guide_prompts=plain)
        got = sorted((r for r in records if r["method"] == spec), key=lambda r: plain.index(r["prompt"]))
        assert [r["prompt"] for r in got] == plain
        assert [r["response"] for r in got] == [w.text for w in want]
        assert [r["gold"] for r in got] == world.gold(plain, [w.text for w in want])
        assert all(r["config"]["chat_template"] is True for r in got)
    plain_cfg = _cfg(world)
    assert "chat_template" not in plain_cfg.identity() and plain_cfg.config_hash != cfg.config_hash
    with pytest.raises(ValueError, match="chat_template"):
        run_compare(world, plain_cfg, tmp_path / "chat", engine=engine, progress=False)


def test_a_strong_model_without_a_chat_template_is_refused_before_anything_is_written(tmp_path, world):
    engine = build_world_engine(world, device="cpu")
    engine.policy.lm.tokenizer.chat_template = None  # a base model's tokenizer
    with pytest.raises(ValueError, match="--chat-template: the strong model .* has no chat template"):
        run_compare(world, _cfg(world, chat_template=True), tmp_path / "run", engine=engine, progress=False)
    assert not (tmp_path / "run" / CONFIG_FILE).exists()


def test_the_flag_is_on_the_compare_and_demo_command_lines():
    parser = build_parser("compare")
    for command in ("compare", "demo"):
        args = parser.parse_args([command, "--chat-template"] + (["--world", "toy", "--out", "x"]
                                                                 if command == "compare" else []))
        assert args.chat_template is True
        assert parser.parse_args([command] + (["--world", "toy", "--out", "x"] if command == "compare" else [])
                                 ).chat_template is False
