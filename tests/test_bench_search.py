"""The benchmark's seed-path reference (bench/bench_search.py) does what the seed's code does: its sampling is
HF sampling with the seed, its guide scores are full re-scores of each row alone, its timers restore what they
wrap, and the report's FLOP ratios are the counted work. Tiny models, offline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from w2s_eval import SamplingConfig, load_causal_lm
from devtools.toy import build_causal_lm, build_tokenizer


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_search.py"
    spec = importlib.util.spec_from_file_location("bench_search_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    tok = build_tokenizer(str(root / "tok"))
    return {name: load_causal_lm(build_causal_lm(str(root / name), tok, hidden=32, layers=1, seed=seed),
                                 dtype="float32", device="cpu", name=name)
            for seed, name in enumerate(("strong", "tuned", "untuned"))}


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_seed_path_with_one_beam_is_hf_sampling_with_the_seed(bench, lms, chunk):
    strong = lms["strong"]
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=12, seed=0)
    prompt = "The movie was"
    ids = strong.tokenizer.encode(prompt)
    text, counts = bench.seed_cbs(ids, prompt, strong, [lms["tuned"], lms["untuned"]], 1, 1, chunk, cfg, seed=123)
    torch.manual_seed(123)
    x = torch.tensor([ids])
    out = strong.model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=0.7, top_k=50,
                                max_new_tokens=12, pad_token_id=strong.pad_id)
    assert text == strong.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    n = out.shape[1] - len(ids)  # tokens sampled (EOS included)
    assert counts["rounds"] == -(-n // chunk)  # one scoring per chunk, and one when the row finishes
    assert counts["strong"] == len(ids) + n - 1  # prompt once, then one token per step


def _alone(lm, prompt: str, response: str, eos: bool) -> float:
    """log p(response | prompt) of one row, unpadded, as the seed computes it (joint tokenization)."""
    tok = lm.tokenizer
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(prompt + response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    n = next((i for i, (a, b) in enumerate(zip(p, ids)) if a != b), min(len(p), len(ids)))
    with torch.no_grad():
        logp = lm.model(input_ids=torch.tensor([ids])).logits.double().log_softmax(-1)[0]
    return sum(logp[i - 1, ids[i]].item() for i in range(max(n, 1), len(ids)))


def test_seed_scores_are_full_rescores_of_each_row_alone(bench, lms):
    prompt, responses, eos = "Here is a movie review from imdb: ", ["I loved it", " bad", "the plot was so very boring"], \
        [True, False, False]
    scores, tokens = bench.seed_scores([lms["tuned"], lms["untuned"]], prompt, responses, eos)
    want = [_alone(lms["tuned"], prompt, r, e) - _alone(lms["untuned"], prompt, r, e) for r, e in zip(responses, eos)]
    assert scores.tolist() == pytest.approx(want, rel=1e-4, abs=1e-4)
    tok = lms["tuned"].tokenizer
    assert tokens == 2 * sum(len(tok(prompt + r, add_special_tokens=False)["input_ids"]) + e for r, e in zip(responses, eos))


def test_timers_count_forwards_and_restore_what_they_wrap(bench, lms):
    tok_cls, reorder = type(lms["strong"].tokenizer), DynamicCache.reorder_cache
    had_call = "__call__" in tok_cls.__dict__
    with bench.Timers(lms["strong"], [lms["tuned"]], torch.device("cpu")) as timers:
        x = torch.tensor([lms["strong"].tokenizer.encode("The plot")])
        with torch.no_grad():
            lms["strong"].model(input_ids=x)
            lms["tuned"].model(input_ids=x)
        lms["strong"].tokenizer("a b c")
        parts = timers.take()
    assert set(parts) == {"strong", "guide", "tokenize"} and all(v > 0 for v in parts.values())
    assert DynamicCache.reorder_cache is reorder and ("__call__" in tok_cls.__dict__) == had_call


def test_report_puts_counted_flop_ratios_beside_the_speed_ups(bench):
    def row(times, strong, guide, rounds):
        return {"s_per_prompt": times, "parts": [{"strong": 0.1}] * len(times), "prompts": 2,
                "per_prompt": {"strong": strong, "guide": guide, "rounds": rounds}}

    res = {"seed path": row([4.0, 5.0, 6.0], 100, 300, 10), "w2s CBS(4,4,5)": row([1.0, 2.0, 3.0], 100, 50, 10),
           "w2s BoN(16)": row([0.8, 1.0, 1.2], 100, 50, 1), "sample 16": row([0.5, 0.5, 0.5], 110, 0, 1)}
    table = bench.report(res, n_strong=10, n_guides=2)
    # seed: 2 * (100*10 + 300*2) = 3200 FLOP; CBS: 2 * (1000 + 100) = 2200 -> ratio 1.45; speed-up 4.0/1.0
    assert "| w2s CBS(4,4,5) | 2 | 1.000 | 2.000 | 4.00x / 2.50x | 0.0 | 1.45 | 2.75 |" in table
    assert "| w2s CBS(4,4,5) / w2s BoN(16) | 1.250x | 2.000x |" in table
    assert "| seed path | 10 | 10.0 | 0.0 | 0.0 | 0.0 | 390.0 |" in table  # (4.0 - 0.1) s over 10 rounds
