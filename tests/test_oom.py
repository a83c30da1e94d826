"""Memory safety (issue 15, item 4): a forward pass of the strong model or a guide that runs out of
memory is rerun on halves of its rows, with the results of the unsplit run. The OOM is injected on
CPU by a hook on the model's last layer that raises torch.OutOfMemoryError above N rows, after the
earlier layers have written to the KV cache (so a failed pass must leave the cache as it was)."""

import contextlib
import logging
import os

import pytest
import torch
from transformers import AutoTokenizer

from devtools.toy import tiny_causal_lm
from w2s_eval import EFTPolicy, SamplingConfig, SearchConfig, TransformersPolicy, chunk_beam_search
from w2s_eval.guide import GuideLM, ImplicitValueScorer
from w2s_eval.lm import CausalLM, OutOfMemoryError, split_on_oom

PROMPTS = ["The movie was", "I loved this film because it was a wonderful story and the", "Bad", "It"]


@contextlib.contextmanager
def oom_above(lm, max_rows):
    """Make ``lm``'s model raise torch.OutOfMemoryError on a pass over more than ``max_rows`` rows."""
    last = lm.model.base_model.layers[-1] if hasattr(lm.model.base_model, "layers") else lm.model.base_model.h[-1]
    seen = []

    def hook(module, args, kwargs):
        rows = (args[0] if args else kwargs["hidden_states"]).shape[0]
        seen.append(rows)
        if rows > max_rows:
            raise OutOfMemoryError(f"injected: {rows} rows > {max_rows}")

    handle = last.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def models(toy_dirs):
    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    device = os.environ.get("W2S_TEST_DEVICE", "cpu")
    return {
        name: CausalLM(tiny_causal_lm(family, tok, seed=seed).to(device), tok, name)
        for name, family, seed in [("strong", "gemma3", 0), ("tuned", "llama", 1), ("untuned", "mistral", 2)]
    }


def _cbs(models, incremental):
    scorer = ImplicitValueScorer(
        GuideLM(models["tuned"], incremental=incremental), GuideLM(models["untuned"], incremental=incremental), beta=1.0
    )
    cfg = SamplingConfig(max_new_tokens=12, seed=3)
    return chunk_beam_search(PROMPTS, TransformersPolicy(models["strong"]), scorer, SearchConfig(2, 2, 4), cfg)


@pytest.mark.parametrize("incremental", [True, False], ids=["guide-cache", "guide-full"])
def test_cbs_split_on_oom_equals_unsplit(models, incremental, caplog, monkeypatch):
    monkeypatch.setattr("w2s_eval.lm._OOM_WARNED", set())
    ref = _cbs(models, incremental)
    with caplog.at_level(logging.WARNING, logger="w2s_eval.lm"), contextlib.ExitStack() as stack:
        seen = [stack.enter_context(oom_above(models[name], 3)) for name in ("strong", "tuned", "untuned")]
        got = _cbs(models, incremental)
    assert all(max(s) > 3 for s in seen)  # every model was asked for more rows than fit, and split
    assert [r.text for r in got] == [r.text for r in ref]
    torch.testing.assert_close([r.score for r in got], [r.score for r in ref], rtol=1e-6, atol=1e-6)
    assert [r.stats["strong_tokens"] for r in got] == [r.stats["strong_tokens"] for r in ref]
    warned = [rec.getMessage() for rec in caplog.records if "ran out of memory" in rec.getMessage()]
    assert sorted(m.split()[0] for m in warned) == ["strong", "tuned", "untuned"]  # once per model


def test_eft_split_on_oom_equals_unsplit(models):
    pol = EFTPolicy(models["strong"], [models["tuned"]], models["untuned"], [1.0])
    cfg = SamplingConfig(max_new_tokens=10, seed=1)
    ref = chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, None), cfg)
    with oom_above(models["tuned"], 1), oom_above(models["strong"], 2):
        got = chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, None), cfg)
    assert [r.text for r in got] == [r.text for r in ref]


def test_one_row_that_does_not_fit_raises(models):
    with oom_above(models["tuned"], 0), pytest.raises(OutOfMemoryError, match="injected: 1 rows"):
        GuideLM(models["tuned"]).logprob_sums(PROMPTS[:2], ["great", "bad"], [False, False])


def test_split_on_oom_halves_and_keeps_order():
    calls = []

    def run(lo, hi):
        calls.append((lo, hi))
        if hi - lo > 3:
            raise OutOfMemoryError("too many")
        return list(range(lo, hi))

    outs, rows = split_on_oom(run, 10, "fake")
    assert sum(outs, []) == list(range(10)) and rows == 3
    assert calls[:3] == [(0, 10), (0, 5), (0, 3)]
    outs, rows = split_on_oom(run, 10, "fake", rows=rows)  # starting where it fitted: no failed pass
    assert all(hi - lo <= 3 for lo, hi in calls[-len(outs) :]) and len(outs) == 4
