"""How the cost of the search grows, on the CPU: time, peak memory and FLOPs per prompt of CBS against BoN as the
budget W x K grows (4, 16, 64), as the chunk length L shrinks (inf, 20, 5, 1), as the response grows (50, 200, 800
tokens; the seed's code path too, whose guides re-score every response in full each chunk), and as prompts per
batch grow (1, 4, 16).

    python bench/bench_scaling.py --json bench/results/scaling_cpu1.json --plot bench/results/scaling_cpu1.png

Models: a strong Llama 256 wide x 4 layers and two guides 64 x 2, built from their configs with random weights
(``bench/gpu_check.py``'s builder and word tokenizer, 4,096 tokens, 2,048 positions; EOS is never drawn, so every
response has all its tokens). Each point runs in a fresh process (``--one``), one pinned thread, after a warm-up
prompt: wall time per prompt (the batch's time / its prompts), the growth of the process's peak resident memory
during the run, and the FLOPs counted by ``w2s_eval.flops``. Defaults: CBS(4,4,5) and BoN(16), 50 new tokens,
8 prompts a batch (the seed path: 2 prompts, one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STRONG = dict(
    model_type="llama",
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
GUIDE = dict(
    STRONG, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)
VOCAB = 4096


def points(seed_tokens=(50, 200)) -> list:
    """(axis, x, method, new tokens, prompts a batch) of every point; the default point (CBS(4,4,5) / BoN(16), 50
    tokens, 8 prompts) sits on every axis and runs once."""
    out = []
    for wk, (w, k) in ((4, (2, 2)), (16, (4, 4)), (64, (8, 8))):
        out += [("budget", wk, f"cbs:{w},{k},5", 50, 8), ("budget", wk, f"bon:{wk}", 50, 8)]
    out += [("chunk", l, f"cbs:4,4,{l}", 50, 8) for l in ("inf", 20, 5, 1)]  # noqa: E741
    out.append(("chunk", "bon", "bon:16", 50, 8))
    for n in (50, 200, 800):
        out += [("response", n, "cbs:4,4,5", n, 8), ("response", n, "bon:16", n, 8)]
    out += [("response", n, "seed:4,4,5", n, 1) for n in seed_tokens]
    for b in (1, 8, 16):
        out += [("batch", b, "cbs:4,4,5", 50, b), ("batch", b, "bon:16", 50, b)]
    return out


def run_one(method: str, new: int, batch: int) -> dict:
    """One point in this process: build the models, warm up, time one run."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_search
    import gpu_check

    from w2s_eval import (
        GuideLM,
        ImplicitValueScorer,
        SamplingConfig,
        SearchConfig,
        TransformersPolicy,
        chunk_beam_search,
    )
    from w2s_eval.flops import total_flops
    from w2s_eval.policy import prompt_seed

    torch.set_num_threads(1)
    tok = gpu_check.word_tokenizer(VOCAB)
    strong = gpu_check.build(STRONG, tok, torch.float32, "cpu", 0, "strong")
    strong.model.generation_config.eos_token_id = VOCAB + 1  # never drawn: every response has all its tokens
    tuned, untuned = (
        gpu_check.build(GUIDE, tok, torch.float32, "cpu", s, n) for s, n in ((1, "tuned"), (2, "untuned"))
    )
    prompts = [" ".join(f"<t{i}>" for i in row) for row in gpu_check._words(batch + 1, 12, VOCAB - 300, 0)]
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=new, seed=0)
    kind, _, params = method.partition(":")
    nums = [None if p == "inf" else int(p) for p in params.split(",")]

    def run(ps):
        if kind == "seed":
            flops = 0
            for p in ps:
                _, counts = bench_search.seed_cbs(
                    TransformersPolicy(strong).encode(p, cfg),
                    p,
                    strong,
                    [tuned, untuned],
                    *nums,
                    cfg,
                    prompt_seed(0, p) % 2**31,
                )
                flops += total_flops(counts["compute"].values())
            return flops
        search = SearchConfig(*nums) if kind == "cbs" else SearchConfig(1, nums[0], None)
        scorer = ImplicitValueScorer(GuideLM(tuned), GuideLM(untuned))
        results = chunk_beam_search(ps, TransformersPolicy(strong), scorer, search, cfg)
        return sum(r.stats["flops"] for r in results)

    run(prompts[:1])  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    flops = run(prompts[1:])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {
        "method": method,
        "prompts": batch,
        "new_tokens": new,
        "s_per_prompt": wall / batch,
        "cpu_s_per_prompt": cpu / batch,
        "peak_rss_growth_mib": grown / 1024,
        "gflop_per_prompt": flops / batch / 1e9,
    }


def table(rows: list) -> str:
    lines = [
        "| axis | x | method | new tokens | prompts | CPU s/prompt | wall s/prompt | GFLOP/prompt | "
        "peak RSS growth, MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['axis']} | {r['x']} | {r['method']} | {r['new_tokens']} | {r['prompts']} | "
            f"{r['cpu_s_per_prompt']:.3f} | {r['s_per_prompt']:.3f} | {r['gflop_per_prompt']:.3f} | "
            f"{r['peak_rss_growth_mib']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    for i, (axis, label) in enumerate(
        (
            ("budget", "budget W x K"),
            ("chunk", "chunk length L (CBS(4,4,L))"),
            ("response", "response tokens"),
            ("batch", "prompts per batch"),
        )
    ):
        ax = fig.add_subplot(1, 4, i + 1)
        mine = [r for r in rows if r["axis"] == axis]
        for family, style in (("cbs", "o-"), ("bon", "s--"), ("seed", "^:")):
            pts = [r for r in mine if r["method"].startswith(family) and r["x"] not in ("bon",)]
            if not pts:
                continue
            xs = list(range(len(pts))) if axis == "chunk" else [r["x"] for r in pts]
            ax.plot(
                xs,
                [r["cpu_s_per_prompt"] for r in pts],
                style,
                label={"cbs": "CBS", "bon": "BoN", "seed": "seed path (CBS)"}[family],
            )
            if axis == "chunk":
                ax.set_xticks(xs)
                ax.set_xticklabels([str(r["x"]) for r in pts])
        if axis == "chunk":
            bon = [r for r in mine if r["x"] == "bon"]
            if bon:
                ax.axhline(bon[0]["cpu_s_per_prompt"], color="gray", linestyle="--", label="BoN(16)")
        if axis in ("budget", "response", "batch"):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({r["x"] for r in mine}))
            ax.set_xticklabels([str(v) for v in sorted({r["x"] for r in mine})])
            ax.set_yscale("log")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("CPU s per prompt", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "1 CPU thread: CPU time per prompt as the search grows (Llama 256x4, guides 64x2, random weights)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="bench/results/scaling_cpu1.json")
    ap.add_argument("--plot", default="bench/results/scaling_cpu1.png")
    ap.add_argument("--axes", default="budget,chunk,response,batch")
    ap.add_argument("--seed-tokens", default="50,200", help="response lengths of the seed path's points")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    rows, done, wanted = [], {}, args.axes.split(",")
    for axis, x, method, new, batch in points(tuple(int(n) for n in args.seed_tokens.split(","))):
        if axis not in wanted:
            continue
        if (method, new, batch) not in done:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps([method, new, batch])],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            done[(method, new, batch)] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"axis": axis, "x": x, **done[(method, new, batch)]})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        doc = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other "
            "jobs (load average {:.1f} at the end)".format(os.getloadavg()[0]),
            "threads": 1,
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1))
    plot(rows, Path(args.plot))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
