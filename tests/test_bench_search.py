"""The benchmark's seed-path reference (bench/bench_search.py) does what the seed's code does: its sampling is
HF sampling with the seed, its guide scores are full re-scores of each row alone, its timers restore what they
wrap, and the report's FLOP ratios are the counted work, each guide's FLOPs once. Tiny models, offline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from devtools.toy import build_causal_lm, build_tokenizer
from w2s_eval import SamplingConfig, load_causal_lm


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
    return {
        name: load_causal_lm(
            build_causal_lm(str(root / name), tok, hidden=32, layers=1, seed=seed),
            dtype="float32",
            device="cpu",
            name=name,
        )
        for seed, name in enumerate(("strong", "tuned", "untuned"))
    }


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_seed_path_with_one_beam_is_hf_sampling_with_the_seed(bench, lms, chunk):
    strong = lms["strong"]
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=12, seed=0)
    prompt = "The movie was"
    ids = strong.tokenizer.encode(prompt)
    text, counts = bench.seed_cbs(ids, prompt, strong, [lms["tuned"], lms["untuned"]], 1, 1, chunk, cfg, seed=123)
    torch.manual_seed(123)
    x = torch.tensor([ids])
    out = strong.model.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=True,
        temperature=0.7,
        top_k=50,
        max_new_tokens=12,
        pad_token_id=strong.pad_id,
    )
    assert text == strong.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    n = out.shape[1] - len(ids)  # tokens sampled (EOS included)
    assert counts["rounds"] == -(-n // chunk)  # one scoring per chunk, and one when the row finishes
    assert counts["strong"] == len(ids) + n - 1  # prompt once, then one token per step
    cost, shape = counts["compute"]["strong"], strong.shape
    assert (cost.prefill_tokens, cost.forward_tokens) == (len(ids), n - 1)
    assert cost.prefill_flops == shape.flops(len(ids))
    assert cost.forward_flops == sum(shape.flops(1, len(ids) + i) for i in range(n - 1))


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
    prompt, responses, eos = (
        "Here is a movie review from imdb: ",
        ["I loved it", " bad", "the plot was so very boring"],
        [True, False, False],
    )
    scores, costs = bench.seed_scores([lms["tuned"], lms["untuned"]], prompt, responses, eos)
    want = [_alone(lms["tuned"], prompt, r, e) - _alone(lms["untuned"], prompt, r, e) for r, e in zip(responses, eos)]
    assert scores.tolist() == pytest.approx(want, rel=1e-4, abs=1e-4)
    tok = lms["tuned"].tokenizer
    lengths = [len(tok(prompt + r, add_special_tokens=False)["input_ids"]) + e for r, e in zip(responses, eos)]
    for name in ("tuned", "untuned"):  # each guide re-scores every row from scratch, once
        assert costs[name].forward_tokens == sum(lengths) and costs[name].prefill_tokens == 0
        assert costs[name].forward_flops == sum(lms[name].shape.flops(n) for n in lengths)


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
    def row(times, gflop, rounds):
        return {
            "s_per_prompt": times,
            "parts": [{"strong": 0.1}] * len(times),
            "prompts": 2,
            "per_prompt": {"strong": 100, "guide": 50, "rounds": rounds, "gflop": gflop},
        }

    res = {
        "seed path": row([4.0, 5.0, 6.0], {"strong": 2.0, "tuned": 0.6, "untuned": 0.6}, 10),
        "w2s CBS(4,4,5)": row([1.0, 2.0, 3.0], {"strong": 2.0, "tuned": 0.1, "untuned": 0.1}, 10),
        "w2s BoN(16)": row([0.8, 1.0, 1.2], {"strong": 2.0, "tuned": 0.1, "untuned": 0.1}, 1),
        "sample 16": row([0.5, 0.5, 0.5], {"strong": 2.2}, 1),
    }
    table = bench.report(res)
    # seed: 3.2 GFLOP; CBS: 2.2 -> ratio 1.45; speed-up 4.0/1.0
    assert "| w2s CBS(4,4,5) | 2 | 1.000 | 2.000 | 4.00x / 2.50x | 2.2 (0.2) | 1.45 | 2.75 |" in table
    assert "| w2s CBS(4,4,5) / w2s BoN(16) | 1.250x | 2.000x |" in table
    assert "| seed path | 10 | 10.0 | 0.0 | 0.0 | 0.0 | 390.0 |" in table  # (4.0 - 0.1) s over 10 rounds


def test_guide_flops_count_each_guide_once(bench, lms):
    """The guides' FLOPs are each guide's own token positions on its own parameters: about 2 x N_guide x the
    positions of both guides together (the tiny models are tied, so N is every parameter), not that on both guides'
    parameters, as the count before did (twice the guides' work). Positions: the guide_tokens counter, plus each
    guide's prompt prefill on the w2s paths (not in that counter)."""
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=8, seed=0)
    prompts = ["The movie was", "Here is a long and boring review of a film"]
    paths = bench.make_paths({**lms, "prompts": prompts}, cfg, 2, 2, 3, batch=2)
    n_guide = bench.params(lms["tuned"])
    assert n_guide == bench.params(lms["untuned"]) == lms["tuned"].shape.matmul_params
    for name in ("seed path", "w2s CBS(2,2,3)", "w2s BoN(4)"):
        out = paths[name](prompts)
        guides = out["gflop"]["tuned"] + out["gflop"]["untuned"]
        positions = out["positions"]["tuned"] + out["positions"]["untuned"]
        assert positions - out["guide"] == (
            0 if name == "seed path" else 2 * sum(len(lms["tuned"].tokenizer.encode(p)) - 1 for p in prompts)
        )
        matmuls = 2 * n_guide * positions / 1e9
        assert matmuls <= guides < 1.2 * matmuls, name  # + attention, a few percent here
        assert out["gflop"]["tuned"] == pytest.approx(out["gflop"]["untuned"], rel=0.05)


def test_legacy_figures_restated_with_each_guide_once(bench):
    """The committed SmolLM2 JSON (written before per-model counts): 728 GFLOP per prompt on the seed path and 273
    for CBS(4,4,5), a FLOP ratio of 2.67 (the count before gave 1,181, 326 and 3.62)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "results" / "search_smollm2_trained_cpu1.json"
    doc = json.loads(path.read_text())
    seed = bench.legacy_gflop(doc["results"]["seed path"]["per_prompt"], doc["params"])
    cbs = bench.legacy_gflop(doc["results"]["w2s CBS(4,4,5)"]["per_prompt"], doc["params"])
    assert (round(seed), round(cbs), round(seed / cbs, 2)) == (728, 273, 2.67)
    assert "| w2s CBS(4,4,5) | 272.7 | 2.67 | 3.63x | 1.36 |" in bench.recompute(doc)
