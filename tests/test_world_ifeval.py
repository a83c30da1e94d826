"""The ifeval-mini world: registration beside imdb-mini, and its builder on tiny data with tiny models (each TRL
trainer runs a few steps), through the same build path as imdb-mini."""

import json
from pathlib import Path

import pytest

pytest.importorskip("langdetect")
pytest.importorskip("immutabledict")

from w2s_eval.world.build import WORLD_NAMES, build_world, recipe, world_dir  # noqa: E402
from w2s_eval.world.train import GuideShape, TrainSettings  # noqa: E402

IFEVAL_ROWS = [
    {
        "key": 1,
        "prompt": "Write a short note about rain. Do not use any commas.",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
    {
        "key": 2,
        "prompt": "Describe a cat. Wrap your entire response with double quotation marks.",
        "instruction_id_list": ["startend:quotation"],
        "kwargs": [{}],
    },
    {
        "key": 3,
        "prompt": "Tell me about tea. Your entire response should be in English, and in all lowercase letters.",
        "instruction_id_list": ["change_case:english_lowercase"],
        "kwargs": [{}],
    },
    {
        "key": 4,
        "prompt": "Write an essay of at least 900 words about bridges.",
        "instruction_id_list": ["length_constraints:number_words"],
        "kwargs": [{"relation": "at least", "num_words": 900}],
    },
    {
        "key": 5,
        "prompt": "Give two tips for sleep. Use exactly 2 bullet points such as:\n* one\n* two",
        "instruction_id_list": ["detectable_format:number_bullet_lists"],
        "kwargs": [{"num_bullets": 2}],
    },
    {
        "key": 6,
        "prompt": "Name a river. End your response with 'Is there anything else I can help with?'",
        "instruction_id_list": ["startend:end_checker"],
        "kwargs": [{"end_phrase": "Is there anything else I can help with?"}],
    },
]
ALPACA = [
    {
        "instruction": f"Question {i}: what is good about {w}?",
        "output": f"{w.capitalize()} is good because it helps people. It is also cheap, and it lasts. Many like it.",
    }
    for i, w in enumerate(
        ["tea", "bread", "rain", "walking", "music", "books", "rivers", "cats", "sleep", "maps", "trains", "gardens"]
    )
]


def test_ifeval_mini_is_registered_beside_imdb_mini(tmp_path):
    from w2s_eval.world_registry import load_world, world_names

    assert {"imdb-mini", "ifeval-mini"} <= set(world_names()) and set(WORLD_NAMES) == {"imdb-mini", "ifeval-mini"}
    r = recipe("ifeval-mini")
    assert r.step_names[0] == "strong" and r.step_names[-1] == "validate" and set(r.steps()) == set(r.step_names)
    assert recipe("imdb-mini").step_names == (
        "data",
        "strong",
        "gold",
        "untuned",
        "pairs",
        "tuned",
        "reward_model",
        "validate",
    )
    assert world_dir("ifeval-mini", tmp_path) == tmp_path / "worlds" / "ifeval-mini"
    with pytest.raises(FileNotFoundError, match="w2s-eval world build ifeval-mini"):
        load_world("ifeval-mini", tmp_path)
    with pytest.raises(ValueError, match="buildable worlds: imdb-mini, ifeval-mini"):
        recipe("nope")
    with pytest.raises(ValueError, match="is built with a IfevalWorldConfig"):
        from w2s_eval.world.build import WorldConfig

        build_world("ifeval-mini", tmp_path, WorldConfig())


def _chat_strong(src: str, dst: Path) -> str:
    """The toy strong model with a chat template (the world stores prompts as chat text)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst)
    tok.save_pretrained(dst)
    return str(dst)


@pytest.fixture(scope="module")
def tiny_world(toy_dirs, tmp_path_factory, ifeval_home):
    from w2s_eval.world.ifeval_mini import IfevalWorldConfig

    root = tmp_path_factory.mktemp("ifeval-world")
    (root / "ifeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_ROWS))
    (root / "alpaca.json").write_text(json.dumps(ALPACA))
    cfg = IfevalWorldConfig(
        strong_source=_chat_strong(toy_dirs["strong"], root / "strong"),
        ifeval_path=str(root / "ifeval.jsonl"),
        alpaca_path=str(root / "alpaca.json"),
        validate_prompts=2,
        n_prompts=8,
        budget_words=75,
        heldout_instructions=4,
        guide=GuideShape(layers=1, hidden=16, heads=2, intermediate=32, max_positions=512),
        sft=TrainSettings(lr=1e-2, batch_size=4, steps=2, max_length=64),
        pair_count=12,
        heldout_pairs=6,
        reference_words=20,
        dpo=TrainSettings(lr=1e-3, batch_size=4, steps=2, max_length=128),
        rm=TrainSettings(lr=1e-3, batch_size=4, steps=2, max_length=256),
        validate_samples=3,
        sampling_tokens=6,
    )
    home = ifeval_home  # the checker's offline data are prepared there
    path = build_world("ifeval-mini", home, cfg, progress=False)
    return {"home": home, "path": path, "cfg": cfg}


def test_tiny_build_runs_every_step_through_the_shared_builder(tiny_world):
    path = tiny_world["path"]
    m = json.loads((path / "manifest.json").read_text())
    names = recipe("ifeval-mini").step_names
    assert m["name"] == "ifeval-mini" and m["complete"] is True and set(m["steps"]) == set(names)
    for step in names:
        assert (path / step).is_dir() and (path / ".done" / f"{step}.json").exists()
    s = m["steps"]
    assert s["data"]["ifeval_prompts"] == 6 and s["data"]["fit_budget"] == 5  # the 900-word essay does not fit
    assert s["data"]["validation"] == 2 and s["data"]["prompts"] == 3
    assert s["untuned"]["trainer"] == "trl.SFTTrainer" and s["untuned"]["steps"] == 2
    assert s["tuned"]["trainer"] == "trl.DPOTrainer" and s["reward_model"]["trainer"] == "trl.RewardTrainer"
    assert s["pairs"]["train"]["pairs"] == 12 and s["pairs"]["heldout"]["pairs"] == 6
    assert s["validate"]["prompts"] == 2 and s["validate"]["samples_per_prompt"] == 3
    assert isinstance(m["quality"]["guidance_works"], bool) and "bon_gold_gain_by_rm" in m["quality"]
    # evaluation prompts are never validation prompts, and no training instruction is an IFEval prompt
    data = path / "data"
    ids = lambda f: {json.loads(line)["id"] for line in open(data / f)}  # noqa: E731
    assert not ids("prompts.jsonl") & ids("validation.jsonl")
    ifeval = {r["prompt"] for r in IFEVAL_ROWS}
    assert not {json.loads(line)["instruction"] for line in open(data / "train.jsonl")} & ifeval
    # the pairs' prompts are chat text of the strong tokenizer, as the world's prompts are
    pair = json.loads(open(path / "pairs" / "train.jsonl").readline())
    assert pair["prompt"].startswith("<user> ") and pair["prompt"].endswith("<assistant> ")


def test_tiny_world_loads_and_scores_with_lm_evals_checker(tiny_world):
    from w2s_eval.world_registry import load_world

    world = load_world("ifeval-mini", tiny_world["home"])
    assert world.name == "ifeval-mini" and len(world.prompts) == 3
    assert world.sampling.max_new_tokens == 6 and world.reward_model is not None
    texts = {pid: text for pid, text in world.prompts}
    rows = {json.loads(line)["id"]: json.loads(line) for line in open(tiny_world["path"] / "data" / "prompts.jsonl")}
    for pid, text in texts.items():
        row = rows[pid]
        if row["instruction_id_list"] == ["startend:quotation"]:
            assert world.gold([text, row["prompt"]], ['"a cat"', "a cat"]) == [1.0, 0.0]
            assert world.judge([text], ['"a cat"']) == [1.0]


def test_rerun_resumes_and_other_settings_are_refused(tiny_world):
    import dataclasses

    path = tiny_world["path"]
    before = (path / ".done" / "pairs.json").stat().st_mtime_ns
    (path / ".done" / "validate.json").unlink()
    build_world("ifeval-mini", tiny_world["home"], tiny_world["cfg"], progress=False)
    assert (path / ".done" / "pairs.json").stat().st_mtime_ns == before
    assert json.loads((path / "manifest.json").read_text())["complete"] is True
    with pytest.raises(ValueError, match=r"dpo_beta \(built with 0.1, asked for 0.5\)"):
        build_world(
            "ifeval-mini", tiny_world["home"], dataclasses.replace(tiny_world["cfg"], dpo_beta=0.5), progress=False
        )


def test_compare_runs_on_the_tiny_world_with_each_guide(tiny_world, tmp_path):
    from w2s_eval.harness.compare import run_compare
    from w2s_eval.harness.plan import make_run_config
    from w2s_eval.harness.records import RECORDS_FILE, read_records
    from w2s_eval.world_registry import load_world

    world = load_world("ifeval-mini", tiny_world["home"])
    for guide in ("implicit", "rm", "gold"):
        cfg = make_run_config(world, "base,bon:n=2,eft:beta=1", 1, 1, guide=guide, device="cpu", batch_size=1)
        run_compare(world, cfg, tmp_path / guide, progress=False)
        records, _ = read_records(tmp_path / guide / RECORDS_FILE)
        assert {r["method"] for r in records} == {"base", "bon:n=2", "eft:beta=1"}  # EFT: the guides' vocabulary
        for r in records:
            assert 0.0 <= r["gold"] <= 1.0 and r["judge"] in (0.0, 1.0)
            assert r["gold"] == world.gold([r["prompt"]], [r["response"]])[0]
