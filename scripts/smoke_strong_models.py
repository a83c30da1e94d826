"""Smoke check on the real strong models (not in CI: needs the pinned wheels, minutes on a CPU).

For each strong model of ``w2s_eval.world.strong`` (SmolLM2-135M, Gemma-3-270M, Qwen2.5-Coder-0.5B):
CBS(1, 1, L) with a seed per prompt, 4 prompts of different lengths in one batch (left padding), must equal
``torch.manual_seed(s); model.generate(do_sample=True, ...)`` run on each prompt alone, token for token
(compared as decoded text), for L = inf and L = 5.

    python scripts/smoke_strong_models.py [--models smollm2-135m gemma3-270m] [--new-tokens 24] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from w2s_eval import SamplingConfig, SearchConfig, TransformersPolicy, chunk_beam_search, load_causal_lm
from w2s_eval.world.strong import STRONG_MODELS, resolve_strong_model

PROMPTS = [
    "Here is a movie review from imdb: I",
    "Here is a movie review from imdb: The plot of this film",
    "Here is a movie review from imdb: After watching it twice with my whole family last weekend, I",
    "Here is a movie review from imdb: Worst",
]
SEEDS = [11, 22, 33, 44]


def hf_samples(lm, cfg: SamplingConfig) -> list:
    """Each prompt alone: torch.manual_seed(s); model.generate(do_sample=True); the decoded new text."""
    out = []
    for prompt, seed in zip(PROMPTS, SEEDS):
        x = torch.tensor([TransformersPolicy(lm).encode(prompt, cfg)], device=lm.device)
        torch.manual_seed(seed)
        y = lm.model.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=True,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=1.0,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=lm.pad_id,
        )
        out.append(lm.tokenizer.decode(y[0, x.shape[1] :], skip_special_tokens=True))
    return out


def check(name: str, new_tokens: int, device: str) -> dict:
    t0 = time.perf_counter()
    lm = load_causal_lm(str(resolve_strong_model(name)), dtype="float32", device=device, name=name)
    row = {"model": name, "type": lm.model.config.model_type, "load_s": time.perf_counter() - t0}
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=new_tokens, seed=0)
    t0 = time.perf_counter()
    want = hf_samples(lm, cfg)
    row["generate_s"] = time.perf_counter() - t0
    for chunk in (None, 5):
        t0 = time.perf_counter()
        got = [
            r.text
            for r in chunk_beam_search(
                PROMPTS, TransformersPolicy(lm), None, SearchConfig(1, 1, chunk), cfg, seeds=SEEDS
            )
        ]
        key = f"cbs_1_1_{chunk or 'inf'}"
        row[key + "_s"] = time.perf_counter() - t0
        row[key] = "pass" if got == want else "FAIL"
        row.setdefault("mismatches", []).extend(
            {"chunk": chunk, "prompt": p, "generate": w, "cbs": g} for p, w, g in zip(PROMPTS, want, got) if w != g
        )
    row["sample"] = want[1]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(STRONG_MODELS), choices=list(STRONG_MODELS))
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [check(name, args.new_tokens, args.device) for name in args.models]
    env = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}"
    print(
        f"\nCBS(1,1,L) vs torch.manual_seed(s); generate(do_sample=True): 4 prompts in one batch, "
        f"{args.new_tokens} new tokens, T 0.7, top-k 50; {env}\n"
    )
    print("| strong model | type | L=inf | L=5 | load s | generate (4 x 1 prompt) s | CBS L=inf s | CBS L=5 s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['type']} | {r['cbs_1_1_inf']} | {r['cbs_1_1_5']} | {r['load_s']:.1f} | "
            f"{r['generate_s']:.1f} | {r['cbs_1_1_inf_s']:.1f} | {r['cbs_1_1_5_s']:.1f} |"
        )
    for r in rows:
        for m in r["mismatches"]:
            print(
                f"MISMATCH {r['model']} L={m['chunk']}: {m['prompt']!r}\n  generate: {m['generate']!r}\n"
                f"  cbs:      {m['cbs']!r}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)
    return 0 if all(r["cbs_1_1_inf"] == r["cbs_1_1_5"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
