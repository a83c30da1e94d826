"""AlpacaEval generation: model_outputs.json from w2s methods, resume, refusal, and the real alpaca_eval tool."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _alpaca_fixtures import INSTRUCTIONS, write_instructions

from w2s_eval.alpaca.decoder import (
    AlpacaEngine,
    GenerationConfig,
    build_alpaca_engine,
    load_model_configs,
    w2s_completions,
)
from w2s_eval.alpaca.generate import OUTPUTS_FILE, STATS_FILE, run_generate
from w2s_eval.cli import main
from w2s_eval.engine import Engine
from w2s_eval.policy import TransformersPolicy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ins_file(tmp_path):
    return write_instructions(tmp_path)


def _env():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _cfg(toy_dirs, **kw):
    base = dict(
        strong=toy_dirs["strong"],
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        method="cbs:w=2,k=2,l=4",
        max_new_tokens=8,
        temperature=1.0,
        top_k=0,
        dtype="float32",
    )
    return GenerationConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def engine(toy_dirs):
    return build_alpaca_engine(_cfg(toy_dirs), device="cpu")


def _annotator_config(tmp_path, value="Output (b)"):
    """A local AlpacaEval annotator that answers without any API (see ../shared/ASSETS.md)."""
    import alpaca_eval

    template = Path(alpaca_eval.__file__).parent / "evaluators_configs" / "text_davinci_003" / "basic_prompt.txt"
    cfg = {
        "local_test": {
            "prompt_template": str(template),
            "fn_completions": "test_completions",
            "completions_kwargs": {"model_name": "test", "value": value},
            "completion_parser_kwargs": {
                "outputs_to_match": {1: r"(?:^|\n) ?Output \(a\)", 2: r"(?:^|\n) ?Output \(b\)"}
            },
            "batch_size": 1,
        }
    }
    path = tmp_path / "annotator" / "configs.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(cfg))
    return path


def _references(tmp_path):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps([{**r, "output": "A reference answer.", "generator": "ref"} for r in INSTRUCTIONS]))
    return path


def test_generate_writes_alpaca_eval_outputs_configs_and_stats(toy_dirs, engine, ins_file, tmp_path):
    cfg = _cfg(toy_dirs)
    out = run_generate(cfg, ins_file, tmp_path / "run", engine=engine, batch_size=2, progress=False)
    rows = json.loads(out.read_text())
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in INSTRUCTIONS]
    assert [r["dataset"] for r in rows] == ["toy", "toy", "other"]
    assert {r["generator"] for r in rows} == {cfg.generator} == {"strong__cbs-w2-k2-l4"}
    assert set(rows[0]) == {"instruction", "output", "generator", "dataset"}
    assert all(isinstance(r["output"], str) and r["output"] == r["output"].strip() for r in rows)
    stats = json.loads((tmp_path / "run" / STATS_FILE).read_text())
    assert [s["instruction"] for s in stats] == [r["instruction"] for r in rows]
    for s in stats:
        assert s["rounds"] >= 1 and s["samples"] >= 4 and s["strong_tokens"] > 0 and s["guide_tokens"] > 0
        assert len(s["beam_scores"]) == 2 and s["score"] == max(s["beam_scores"])
        assert s["wall_time_s"] > 0 and isinstance(s["seed"], int) and s["versions"]["alpaca-eval"] == "0.6.6"
    configs = yaml.safe_load((tmp_path / "run" / "configs.yaml").read_text())
    entry = configs[cfg.generator]
    assert entry["fn_completions"] == "w2s_eval.alpaca.decoder.w2s_completions"
    assert entry["prompt_template"] == f"{cfg.generator}/prompt.txt"
    assert entry["completions_kwargs"]["model_name"] == toy_dirs["strong"]
    assert entry["completions_kwargs"]["method"] == "cbs:w=2,k=2,l=4"
    assert (tmp_path / "run" / "prompt.txt").read_text() == "{instruction}"


def test_strong_prompt_uses_the_chat_template_and_guides_get_the_instruction(toy, toy_dirs):
    seen = []

    def length_guide(prompts, responses, finished):
        seen.extend(zip(prompts, responses))
        return torch.tensor([float(len(r)) for r in responses])

    cfg = _cfg(toy_dirs, method="bon:n=3", tuned=None, untuned=None, reward_model="unused-by-this-test")
    ae = AlpacaEngine(cfg, Engine(TransformersPolicy(toy["strong"]), scorer=length_guide))
    prompt = ae.prompts(["Hello there"])[0]
    assert prompt == toy["strong"].tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("<|user|>Hello there") and prompt.endswith("<|assistant|>")
    results = ae.generate(["Hello there", "Bye"])
    assert {p for p, _ in seen} == {"Hello there", "Bye"}  # guides apply their own template to the instruction
    for ins, r in zip(["Hello there", "Bye"], results):  # best-of-3 by the guide: the longest candidate
        candidates = [resp for p, resp in seen if p == ins]
        assert len(candidates) == 3
        assert r.score == len(r.text) == max(len(c) for c in candidates)


def test_no_chat_template_uses_the_instruction_and_says_so(toy_dirs, tmp_path, caplog):
    from devtools.toy import build_causal_lm, build_tokenizer

    tok = build_tokenizer(str(tmp_path / "tok"), chat_template=False)
    plain = build_causal_lm(str(tmp_path / "plain"), tok, hidden=16, layers=1)
    with caplog.at_level(logging.WARNING, logger="w2s_eval.alpaca.decoder"):
        ae = build_alpaca_engine(GenerationConfig(strong=plain, method="base", dtype="float32"), device="cpu")
    assert "no chat template" in caplog.text
    assert ae.prompts(["Say hi"]) == ["Say hi"]
    with pytest.raises(ValueError, match="has no chat template"):
        build_alpaca_engine(GenerationConfig(strong=plain, method="base", chat_template=True), device="cpu")


class _Interrupting:
    """An engine that stops after ``n`` batches, as a Ctrl-C would."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, []

    def for_config(self, cfg):
        self.inner.for_config(cfg)
        return self

    def generate(self, instructions, batch_size=8):
        if len(self.calls) == self.n:
            raise KeyboardInterrupt
        self.calls.append(list(instructions))
        return self.inner.generate(instructions, batch_size)


def test_interrupted_run_keeps_its_work_and_resumes_to_the_same_outputs(toy_dirs, engine, ins_file, tmp_path):
    cfg = _cfg(toy_dirs, method="bon:n=2")
    stopper = _Interrupting(engine, 1)
    with pytest.raises(KeyboardInterrupt):
        run_generate(cfg, ins_file, tmp_path / "run", engine=stopper, batch_size=1, progress=False)
    first = json.loads((tmp_path / "run" / OUTPUTS_FILE).read_text())
    assert [r["instruction"] for r in first] == [INSTRUCTIONS[0]["instruction"]]
    counter = _Interrupting(engine, 99)
    run_generate(cfg, ins_file, tmp_path / "run", engine=counter, batch_size=1, progress=False)
    assert counter.calls == [[INSTRUCTIONS[1]["instruction"]], [INSTRUCTIONS[2]["instruction"]]]  # only the rest
    resumed = json.loads((tmp_path / "run" / OUTPUTS_FILE).read_text())
    assert resumed[0] == first[0]
    # seeds come from the prompt text, so an uninterrupted run in one batch gives the same outputs
    fresh = run_generate(cfg, ins_file, tmp_path / "fresh", engine=engine, batch_size=3, progress=False)
    assert json.loads(fresh.read_text()) == resumed
    stats = json.loads((tmp_path / "run" / STATS_FILE).read_text())
    assert len(stats) == 3
    again = _Interrupting(engine, 99)
    run_generate(cfg, ins_file, tmp_path / "run", engine=again, progress=False)
    assert again.calls == []  # nothing left to do


def test_limit_then_more(toy_dirs, engine, ins_file, tmp_path):
    cfg = _cfg(toy_dirs, method="base")
    run_generate(cfg, ins_file, tmp_path / "run", engine=engine, limit=1, progress=False)
    assert len(json.loads((tmp_path / "run" / OUTPUTS_FILE).read_text())) == 1
    counter = _Interrupting(engine, 99)
    run_generate(cfg, ins_file, tmp_path / "run", engine=counter, progress=False)
    assert sum(len(c) for c in counter.calls) == 2


def test_a_directory_of_another_config_is_refused_untouched(toy_dirs, engine, ins_file, tmp_path):
    run_generate(_cfg(toy_dirs, method="base"), ins_file, tmp_path / "run", engine=engine, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ValueError, match=r"different config: method is 'base' there but 'bon:n=2' now"):
        run_generate(_cfg(toy_dirs, method="bon:n=2"), ins_file, tmp_path / "run", engine=engine, progress=False)
    with pytest.raises(ValueError, match="different config: temperature"):
        run_generate(
            _cfg(toy_dirs, method="base", temperature=0.5), ins_file, tmp_path / "run", engine=engine, progress=False
        )
    other = tmp_path / "other.json"
    other.write_text(json.dumps(INSTRUCTIONS + [{"instruction": "New one"}]))
    with pytest.raises(ValueError, match="different config: instructions_sha256"):
        run_generate(_cfg(toy_dirs, method="base"), other, tmp_path / "run", engine=engine, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    # a model_outputs.json this command did not make is never overwritten
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / OUTPUTS_FILE).write_text("[]")
    with pytest.raises(FileExistsError, match="not made by this command"):
        run_generate(_cfg(toy_dirs, method="base"), ins_file, foreign, engine=engine, progress=False)
    assert (foreign / OUTPUTS_FILE).read_text() == "[]"


def test_bad_instruction_file_fails_before_anything_is_written(toy_dirs, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a"}, {"instruction": "a"}]))
    code = main(
        [
            "alpaca-eval",
            "generate",
            "--strong",
            toy_dirs["strong"],
            "--method",
            "base",
            "--instructions",
            str(bad),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2 and "duplicated instruction" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    code = main(
        [
            "alpaca-eval",
            "generate",
            "--strong",
            toy_dirs["strong"],
            "--method",
            "cbs:w=2,k=2,l=4",
            "--instructions",
            str(bad),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2 and "needs a guide" in capsys.readouterr().err


def test_real_alpaca_eval_cli_accepts_the_outputs(toy_dirs, engine, ins_file, tmp_path):
    cfg = _cfg(toy_dirs, method="base")
    outputs = run_generate(cfg, ins_file, tmp_path / "run", engine=engine, progress=False)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from alpaca_eval.main import main; sys.exit(main())",
        "evaluate",
        "--model_outputs",
        str(outputs),
        "--reference_outputs",
        str(_references(tmp_path)),
        "--annotators_config",
        str(_annotator_config(tmp_path)),
        "--output_path",
        str(tmp_path / "ae"),
        "--fn_metric",
        "get_winrate",
        "--sort_by",
        "win_rate",
        "--precomputed_leaderboard",
        "None",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    board = pd.read_csv(tmp_path / "ae" / "leaderboard.csv", index_col=0)
    assert list(board.index) == [cfg.generator]
    assert board.loc[cfg.generator, "n_total"] == len(INSTRUCTIONS)
    ann = json.loads((tmp_path / "ae" / "annotations.json").read_text())
    ours = {r["instruction"]: r["output"] for r in json.loads(outputs.read_text())}
    assert {a["instruction"]: a["output_2"] for a in ann} == ours
    assert {a["generator_2"] for a in ann} == {cfg.generator}


def test_decoder_contract_and_evaluate_from_model_with_the_callable(toy_dirs, engine, ins_file, tmp_path):
    import alpaca_eval

    cfg = _cfg(toy_dirs, method="bon:n=2")
    outputs = run_generate(cfg, ins_file, tmp_path / "run", engine=engine, progress=False)
    kwargs = yaml.safe_load((tmp_path / "run" / "configs.yaml").read_text())[cfg.generator]["completions_kwargs"]
    kwargs["device"] = "cpu"
    direct = w2s_completions([r["instruction"] for r in INSTRUCTIONS], **kwargs)
    assert set(direct) == {"completions", "price_per_example", "time_per_example"}
    assert len(direct["completions"]) == len(direct["price_per_example"]) == len(direct["time_per_example"]) == 3
    assert direct["price_per_example"] == [0.0] * 3 and all(t > 0 for t in direct["time_per_example"])
    expected = [r["output"] for r in json.loads(outputs.read_text())]
    assert [c.strip() for c in direct["completions"]] == expected  # the decoder = the generate command

    model_configs = load_model_configs(tmp_path / "run")
    entry = model_configs[cfg.generator]
    assert entry["fn_completions"] is w2s_completions and os.path.isabs(entry["prompt_template"])
    entry["completions_kwargs"]["device"] = "cpu"
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    board, annotations = alpaca_eval.evaluate_from_model(
        model_configs=model_configs,
        evaluation_dataset=json.loads(_references(tmp_path).read_text()),
        annotators_config=str(_annotator_config(tmp_path)),
        output_path=tmp_path / "efm",
        chunksize=None,
        fn_metric="get_winrate",
        sort_by="win_rate",
        precomputed_leaderboard=None,
        is_return_instead_of_print=True,
    )
    assert board.loc[cfg.generator, "n_total"] == 3
    made = json.loads((tmp_path / "efm" / "model_outputs.json").read_text())
    assert [r["output"] for r in made] == expected and {r["generator"] for r in made} == {cfg.generator}


def test_config_validation():
    with pytest.raises(ValueError, match="needs a guide"):
        GenerationConfig(strong="s", method="bon:n=4")
    with pytest.raises(ValueError, match="needs tuned= and untuned="):
        GenerationConfig(strong="s", method="eft:beta=1", reward_model="rm")
    with pytest.raises(ValueError, match="both tuned and untuned"):
        GenerationConfig(strong="s", tuned="t")
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(strong="s", top_p=2.0)
    with pytest.raises(ValueError, match="tuned_template"):
        GenerationConfig(strong="s", tuned_template="no placeholder")
    with pytest.raises(ValueError, match="unknown generation setting"):
        w2s_completions(["x"], strong="s", temprature=0.5)
    assert (
        GenerationConfig(strong="/m/SmolLM2-1.7B-Instruct/", method="eft:beta=0.5", tuned="t", untuned="u").generator
        == "SmolLM2-1.7B-Instruct__eft-beta0.5"
    )
    assert GenerationConfig(strong="org/model", method="bon:n=16", reward_model="rm").generator == "model__bon-n16"


def test_shards_merge_to_the_outputs_of_one_process(toy_dirs, engine, ins_file, tmp_path, capsys):
    """`generate --shard I/N` (batches of 1: shard 0 takes instructions 0 and 2, shard 1 instruction 1), then
    `alpaca-eval merge`: model_outputs.json byte for byte that of one process, the stats of every instruction."""
    from w2s_eval.alpaca.generate import merge_outputs
    from w2s_eval.sharding import Shard

    cfg = _cfg(toy_dirs, method="bon:n=2")
    one = run_generate(cfg, ins_file, tmp_path / "one", engine=engine, batch_size=1, progress=False)
    out = tmp_path / "sharded"
    first = run_generate(cfg, ins_file, out, engine=engine, batch_size=1, progress=False, shard=Shard(1, 2))
    assert first.name == "model_outputs.shard-1-of-2.json"
    assert [r["instruction"] for r in json.loads(first.read_text())] == [INSTRUCTIONS[1]["instruction"]]
    run_generate(cfg, ins_file, out, engine=engine, batch_size=1, progress=False, shard=Shard(0, 2))
    assert not (out / OUTPUTS_FILE).exists()
    assert merge_outputs(out, ins_file) == 3
    assert (out / OUTPUTS_FILE).read_bytes() == one.read_bytes()
    assert [s["instruction"] for s in json.loads((out / STATS_FILE).read_text())] == [
        r["instruction"] for r in INSTRUCTIONS
    ]
    assert not list(out.glob("*.shard-*"))
    with pytest.raises(ValueError, match="is not the instruction set"):
        (tmp_path / "other").mkdir()
        merge_outputs(out, write_instructions(tmp_path / "other", INSTRUCTIONS[:2]))
