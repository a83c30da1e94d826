"""Benchmark of the search engine, reported as ratios measured side by side on one machine.

1. CBS(4,4,5), P prompts, N new tokens, batched, vs a naive reference that follows the
   paper's code path: one prompt at a time, HF ``generate`` re-encoding the whole prefix
   every chunk, guides re-scoring the full response every chunk.      target: >= 5x
2. CBS(4,4,5) vs sampling W*K=16 continuations per prompt + one final guide scoring
   (= BoN(16) in this engine).                                           target: <= 1.3x
3. Guide token forwards, incremental vs full re-scoring, per chunk length L in {1, 5, 30}.

Tiny models (built offline with w2s_eval.toy, briefly trained on its corpus): a strong model
and two smaller guides sharing its tokenizer. ``python bench/bench_search.py --device auto`` uses CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

from w2s_eval import (GuideLM, ImplicitValueScorer, SamplingConfig, SearchConfig, TransformersPolicy,
                      chunk_beam_search, load_causal_lm)
from w2s_eval.sampling import prompt_seed
from w2s_eval.toy import CORPUS, build_causal_lm, build_tokenizer, train_causal_lm


def build_models(root: str, device: str, strong_hidden: int, strong_layers: int, train_steps: int = 150):
    """A strong model and two guides; trained ``train_steps`` (guides: fewer) on the toy corpus so that
    they write word-like text, as real models do (0: random weights, which write byte salad)."""
    tok = build_tokenizer(os.path.join(root, "tok"))
    paths = {
        "strong": build_causal_lm(os.path.join(root, "strong"), tok, hidden=strong_hidden, layers=strong_layers, seed=0,
                                  init_std=0.05),
        "tuned": build_causal_lm(os.path.join(root, "tuned"), tok, hidden=64, layers=2, seed=1, init_std=0.05),
        "untuned": build_causal_lm(os.path.join(root, "untuned"), tok, hidden=64, layers=2, seed=2, init_std=0.05),
    }
    for (name, path), steps in zip(paths.items(), (train_steps, 2 * train_steps // 3, train_steps // 3)):
        if steps:
            train_causal_lm(path, steps, seed=len(name), device=device)
    return {k: load_causal_lm(v, dtype="float32", device=device, name=k) for k, v in paths.items()}


def scorer_for(models, incremental: bool) -> ImplicitValueScorer:
    return ImplicitValueScorer(GuideLM(models["tuned"], incremental=incremental),
                               GuideLM(models["untuned"], incremental=incremental))


def naive_cbs(prompt: str, models, scorer, W: int, K: int, L: int, cfg: SamplingConfig) -> str:
    """The paper's code path: per prompt; each chunk re-encodes prefixes with HF generate."""
    lm = models["strong"]
    tok = lm.tokenizer
    torch.manual_seed(prompt_seed(cfg.seed, prompt) % (2**31))
    prompt_ids = tok.encode(prompt)
    beams = [([], False)]  # (response ids, finished)
    eos = set(lm.eos_ids)
    while True:
        live = [b for b in beams if not b[1]]
        if not live:
            break
        reps = W * K if len(beams) == 1 and not beams[0][0] else K
        cands = [b for b in beams if b[1]]
        for resp, _ in live:
            ids = torch.tensor([prompt_ids + resp], device=lm.device)
            n = min(L, cfg.max_new_tokens - len(resp))
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=cfg.top_k or None,
                                    temperature=cfg.temperature, max_new_tokens=n, min_new_tokens=0,
                                    num_return_sequences=reps, pad_token_id=lm.pad_id)
            for row in out[:, ids.shape[1]:].tolist():
                new = []
                fin = False
                for t in row:
                    if t in eos:
                        fin = True
                        break
                    new.append(t)
                full = resp + new
                cands.append((full, fin or len(full) >= cfg.max_new_tokens))
        texts = tok.batch_decode([c[0] for c in cands], skip_special_tokens=True)
        scores = scorer([prompt] * len(cands), texts, [c[1] for c in cands]).tolist()
        order = sorted(range(len(cands)), key=lambda i: -scores[i])[:W]
        beams = [cands[i] for i in order]
    return tok.decode(beams[0][0], skip_special_tokens=True)


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=50)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--strong-hidden", type=int, default=256)
    ap.add_argument("--strong-layers", type=int, default=4)
    ap.add_argument("--naive-prompts", type=int, default=8, help="prompts for the (slow) naive reference; "
                    "its time is scaled per prompt")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=150, help="train the tiny models this long first (0: random)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from w2s_eval.models import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        models = build_models(root, str(device), args.strong_hidden, args.strong_layers, args.train_steps)
    prompts = [line for line in CORPUS if len(line) > 20][: args.prompts]
    cfg = SamplingConfig(temperature=1.0, top_k=50, max_new_tokens=args.new_tokens, seed=0)
    policy = TransformersPolicy(models["strong"])
    W, K, L = 4, 4, 5

    def run(search, incremental=True, ps=prompts):
        return chunk_beam_search(ps, policy, scorer_for(models, incremental), search, cfg)

    run(SearchConfig(W, K, L), ps=prompts[:4])  # warm-up
    best = {}
    for _ in range(args.repeats):
        for key, search in (("cbs", SearchConfig(W, K, L)), ("sample16", SearchConfig(1, W * K, None))):
            t, res = timed(lambda: run(search), device)
            best[key] = min(best.get(key, float("inf")), t)
            best[key + "_tokens"] = sum(r.stats["strong_tokens"] for r in res)
    naive_ps = prompts[: args.naive_prompts]
    naive_scorer = scorer_for(models, incremental=False)
    t_naive, _ = timed(lambda: [naive_cbs(p, models, naive_scorer, W, K, L, cfg) for p in naive_ps], device)
    t_naive_all = t_naive / len(naive_ps) * len(prompts)

    counts = {}
    for chunk in (1, 5, 30):
        for inc in (True, False):
            res = run(SearchConfig(W, K, chunk), incremental=inc)
            counts[(chunk, inc)] = sum(r.stats["guide_tokens"] for r in res)

    rows = [
        ("CBS(4,4,5) batched vs naive per-prompt reference", f"{t_naive_all / best['cbs']:.1f}x faster", ">= 5x",
         f"{best['cbs']:.2f} s vs {t_naive_all:.2f} s (naive timed on {len(naive_ps)} prompts, scaled)"),
        ("CBS(4,4,5) vs 16 samples + one scoring", f"{best['cbs'] / best['sample16']:.2f}x the time", "<= 1.3x",
         f"{best['cbs']:.2f} s vs {best['sample16']:.2f} s"),
    ]
    for chunk in (1, 5, 30):
        inc, full = counts[(chunk, True)], counts[(chunk, False)]
        rows.append((f"guide token forwards, L={chunk}: incremental / full", f"{inc / full:.3f}", "",
                     f"{inc} vs {full}"))
    env = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, device {device}"
    if device.type == "cuda":
        env += f" ({torch.cuda.get_device_name(device)})"
    print(f"\nw2s-eval search benchmark: {args.prompts} prompts, {args.new_tokens} new tokens; {env}\n")
    print("| measure | result | target | detail |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "args": vars(args), "rows": rows, "seconds": best,
                       "naive_seconds_scaled": t_naive_all,
                       "guide_tokens": {f"L={c},incremental={i}": v for (c, i), v in counts.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
