"""Units of the lm-eval backend: model-arg parsing, the startup hook, the task datasets, scorers, filter and
metric. (Ranks are accelerate's: the two-rank torchrun run is in test_lm_eval_cli.py.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_lm_eval_helpers import task_utils

from w2s_eval.lm_eval_backend.args import MODEL_ARG_KEYS, parse_model_args

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- model args


def test_model_args_parse_method_and_types():
    a, dev = parse_model_args(
        {"strong": "s", "method": "cbs", "w": 2, "k": "3", "l": math.inf, "beta": "0.5"},
        {"batch_size": "auto", "device": "cuda:0", "max_batch_size": None},
    )
    assert a.method_config().spec == "cbs:w=2,k=3,l=inf" and a.beta == 0.5 and a.batch_size == 8 and dev == "cuda:0"
    a, _ = parse_model_args(
        {"pretrained": "s", "method": "bon", "n": 4, "parallelize": True, "tuned": "a|b", "untuned": "u"}
    )
    assert a.strong == "s" and a.method_config().spec == "bon:n=4" and a.device_map == "auto"
    assert a.engine_spec(device="cpu").to_dict()["tuned"] == ["a", "b"]
    a, _ = parse_model_args({"strong": "s", "method": "eft", "beta": 2, "tuned": "t", "untuned": "u"})
    assert a.method_config().spec == "eft:beta=2" and a.engine_spec().tuned == ("t",)
    assert parse_model_args({"strong": "s"})[0].method_config().spec == "cbs:w=4,k=4,l=5"  # the core default


@pytest.mark.parametrize(
    "given,want",
    [("l=inf", "cbs:w=2,k=2,l=inf"), ("l=Infinity", "cbs:w=2,k=2,l=inf"), ("l=-inf", None), ("l=-Infinity", None)],
)
def test_negative_infinity_is_not_an_unbounded_chunk(given, want):
    """Issue 25, item 9: lm-eval's own --model_args parser turns 'l=-inf' into the float -inf, which was taken as
    inf; it is refused (naming l) before any model loads, as lm-eval's CLI calls the model."""
    from w2s_eval.lm_eval_backend.backend import W2SLM

    args = f"strong=/nonexistent/model,method=cbs,w=2,k=2,{given}"
    if want is None:
        with pytest.raises(ValueError, match=r"l must be an integer or inf, got -inf"):
            W2SLM.create_from_arg_string(args)
    else:
        from lm_eval.utils import simple_parse_args_string

        assert parse_model_args(simple_parse_args_string(args))[0].method_config().spec == want


@pytest.mark.parametrize(
    "args,match",
    [
        ({"strong": "s", "foo": 1, "bar": 2}, r"unknown model_args key\(s\) bar, foo; valid keys: batch_size, beta"),
        ({}, "strong=PATH_OR_ID"),
        ({"strong": "s", "method": "bon", "w": 2}, "w= applies to method=cbs"),
        ({"strong": "s", "method": "cbs", "n": 2}, "n= applies to method=bon"),
        ({"strong": "s", "tuned": "t"}, "both tuned= and untuned="),
        ({"strong": "s", "method": "beam"}, "method='beam' is unknown"),
        ({"strong": "s", "method": "cbs:w=2"}, "separate keys"),
        ({"strong": "s", "l": 0}, "l must be a positive integer"),
        ({"strong": "s", "w": 1.5}, "w must be an integer"),
        ({"strong": "s", "temperature": -0.1}, "temperature"),
        ({"strong": "s", "top_p": 0}, "top_p"),
        ({"strong": "s", "pretrained": "t"}, "not both"),
    ],
)
def test_model_args_errors(args, match):
    with pytest.raises(ValueError, match=match):
        parse_model_args(args)


def test_every_model_arg_is_documented():
    doc = (REPO / "docs" / "lm-eval.md").read_text(encoding="utf-8")
    for key in MODEL_ARG_KEYS:
        assert f"`{key}`" in doc, f"model arg {key} is not documented in docs/lm-eval.md"


# ----------------------------------------------------------------------------- hook


@pytest.mark.slow
def test_pth_line_is_one_import_line_that_registers_after_lm_eval_models(tmp_path):
    from w2s_eval.lm_eval_backend import pth_line

    line = pth_line()
    assert line.startswith("import ") and line.count("\n") == 1
    # run the line as site.py would, then import lm-eval's registry: hf and w2s both resolve
    code = (
        f"exec({line!r})\n"
        "import sys; assert 'lm_eval' not in sys.modules\n"
        "from lm_eval.api.registry import get_model, model_registry\n"
        "print(get_model('hf').__name__, type(model_registry._objs['w2s']).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["HFLM", "EntryPoint"]


def test_register_in_process_keeps_lm_evals_own_models():
    from lm_eval.api.registry import get_model

    from w2s_eval.lm_eval_backend import register
    from w2s_eval.lm_eval_backend.backend import W2SLM

    register()
    register()  # idempotent
    assert get_model("w2s") is W2SLM
    assert get_model("hf").__name__ == "HFLM" and get_model("dummy").__name__ == "DummyLM"


def test_shipped_pth_file_matches_the_hook_source():
    """compat/w2s_eval_lm_eval.pth (what the build backend puts into every wheel) must be the current hook
    (regenerate: python -m w2s_eval.lm_eval_backend --print-pth > compat/w2s_eval_lm_eval.pth)."""
    from w2s_eval.lm_eval_backend import PTH_NAME, pth_line

    assert (REPO / "compat" / PTH_NAME).read_text(encoding="utf-8") == pth_line()


def test_install_hook_writes_and_removes(tmp_path):
    from w2s_eval.lm_eval_backend import PTH_NAME, install_hook, pth_line, uninstall_hook

    path = install_hook(tmp_path)
    assert path == tmp_path / PTH_NAME and path.read_text() == pth_line()
    assert install_hook(tmp_path) == path  # idempotent
    assert uninstall_hook(tmp_path) and not path.exists() and not uninstall_hook(tmp_path)
    with pytest.raises(FileNotFoundError):
        install_hook(tmp_path / "missing")


def test_output_dir_of_run_reads_the_evaluation_tracker_of_simple_evaluate(tmp_path):
    """The stats directory is the output path of the EvaluationTracker that simple_evaluate runs with (what the
    lm_eval CLI makes from --output_path), found while simple_evaluate builds the model."""
    import lm_eval.api.registry
    from lm_eval import evaluator
    from lm_eval.api.model import LM
    from lm_eval.loggers import EvaluationTracker

    from w2s_eval.lm_eval_backend.stats import output_dir_of_run

    seen = []

    class Probe(Exception):
        pass

    class ProbeLM(LM):  # a registered model that records what the w2s model would see while it is built
        @classmethod
        def create_from_arg_string(cls, *args, **kwargs):
            seen.append(output_dir_of_run())
            raise Probe

    if "w2s_output_probe" not in lm_eval.api.registry.model_registry:
        lm_eval.api.registry.register_model("w2s_output_probe")(ProbeLM)
    for out in (tmp_path / "res", tmp_path / "res" / "x.json", None):
        tracker = EvaluationTracker(output_path=str(out) if out else None)
        with pytest.raises(Probe):
            evaluator.simple_evaluate(
                model="w2s_output_probe", model_args="", tasks=["any"], evaluation_tracker=tracker
            )
    assert seen == [tmp_path / "res", tmp_path / "res", None]
    assert output_dir_of_run() is None  # outside simple_evaluate


# ----------------------------------------------------------------------------- tasks


@pytest.mark.slow
def test_bundled_imdb_prompts_are_the_world_heldout_prompts():
    build_imdb_prompts = task_utils("w2s_imdb_sentiment").build_imdb_prompts

    bundled = [json.loads(x) for x in (REPO / "tasks/w2s_imdb_sentiment/imdb_prompts.jsonl").read_text().splitlines()]
    assert len(bundled) == 200
    assert bundled == build_imdb_prompts(200)
    assert all(r["prompt"] == "Here is a movie review from imdb: " + r["prefix"] for r in bundled)


def test_imdb_dataset_scorer_choice(monkeypatch, toy_dirs):
    load_imdb_dataset = task_utils("w2s_imdb_sentiment").load_imdb_dataset

    bundled = REPO / "tasks/w2s_imdb_sentiment/imdb_prompts.jsonl"
    monkeypatch.delenv("W2S_SENTIMENT_SCORER", raising=False)
    ds = load_imdb_dataset(bundled, imdb_n=5, strong="ignored model arg")
    assert len(ds["test"]) == 5 and set(ds["test"]["scorer"]) == {"vader"}
    monkeypatch.setenv("W2S_SENTIMENT_SCORER", f"classifier:{toy_dirs['clf']}")
    assert load_imdb_dataset(bundled, imdb_n=2)["test"][0]["scorer"] == f"classifier:{toy_dirs['clf']}"
    # --metadata wins over the environment
    assert load_imdb_dataset(bundled, imdb_n=2, sentiment_scorer="vader")["test"][0]["scorer"] == "vader"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_imdb_dataset(bundled, sentiment_scorer="classifier:/no/such/dir")
    with pytest.raises(ValueError, match="imdb_source"):
        load_imdb_dataset(bundled, imdb_source="web")
    with pytest.raises(ValueError, match="imdb_n"):
        load_imdb_dataset(bundled, imdb_n=0)


def test_instruct_dataset_needs_a_reward_model(monkeypatch, toy_dirs):
    load_instruct_dataset = task_utils("w2s_instruct").load_instruct_dataset

    bundled = REPO / "tasks/w2s_instruct/instructions.jsonl"
    monkeypatch.delenv("W2S_INSTRUCT_RM", raising=False)
    with pytest.raises(ValueError, match="instruct_rm"):
        load_instruct_dataset(bundled)
    ds = load_instruct_dataset(bundled, instruct_rm=f"rm:{toy_dirs['rm']}")
    assert len(ds["test"]) == 40 and all(d["prompt"] == d["instruction"] for d in ds["test"])


def test_scorers_filter_and_metric(toy_dirs):
    import torch

    from w2s_eval.engine import load_classifier
    from w2s_eval.lm_eval_backend.scorer_spec import load_scorer
    from w2s_eval.lm_eval_backend.tasks import RewardFilter, process_results
    from w2s_eval.scorers import ClassifierScorer

    vader = load_scorer("vader")
    good, bad = vader(["A movie: ", "A movie: "], ["wonderful, I loved it", "awful, I hated it"])
    assert good > 0 > bad
    spec = f"classifier:{toy_dirs['clf']}@POSITIVE"
    model, tok = load_classifier(toy_dirs["clf"], dtype="float32", device="cpu")
    expected = ClassifierScorer(model, tok, label=1)(["Here "], ["it was"], [True])
    assert load_scorer(spec)(["Here "], ["it was"]) == pytest.approx(expected.tolist(), abs=1e-5)
    assert load_scorer(toy_dirs["rm"])(["a"], ["b"]) == load_scorer(f"rm:{toy_dirs['rm']}")(["a"], ["b"])
    with pytest.raises(ValueError, match="unknown scorer kind"):
        load_scorer("bert:x")
    docs = [{"prompt": "A movie: ", "scorer": "vader"}, {"prompt": "A movie: ", "scorer": spec}]
    out = RewardFilter().apply([["wonderful"], ["it was", "so"]], docs)
    assert out[0] == pytest.approx(vader(["A movie: "], ["wonderful"]))
    assert len(out[1]) == 2 and all(isinstance(v, float) for v in out[1])
    assert process_results(docs[1], [out[1]]) == {"reward": pytest.approx(sum(out[1]) / 2)}
    assert not torch.is_tensor(out[1][0])
