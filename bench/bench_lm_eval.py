"""Benchmark of the lm-eval backend, measured side by side in one process on one machine.

1. ``w2s`` with method=base vs lm-eval's ``hf`` on the same model, task and batch size:
   wall time (and this process's CPU time, which other jobs on a shared machine disturb
   less) of ``lm_eval.simple_evaluate`` (models loaded beforehand), for a greedy
   generate_until task and a multiple-choice (loglikelihood) task.      target: ratio <= 1.1
   The generated texts and log-likelihoods are checked equal (1e-6 relative) on the way.
2. CBS(2,2,30) vs BoN(4) with the same guides on the generate task, sampled at T=0.7:
   wall time and compute counters (strong / guide token forwards) from the stats files.

Tiny random models built offline with ``devtools.toy`` (a strong model and two small guides
sharing its tokenizer). ``python bench/bench_lm_eval.py [--device auto] [--prompts 32]``.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # devtools/ (tiny models, launchers)

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time

import torch


def build(root: str, hidden: int, layers: int) -> dict:
    from devtools.toy import build_strong_and_guides

    return build_strong_and_guides(root, hidden, layers, init_std=0.05)


def write_tasks(root: str, n: int, max_tokens: int) -> str:
    from devtools.toy import CORPUS

    lines = [c for c in CORPUS if len(c.split()) >= 6][:n]
    with open(os.path.join(root, "gen.jsonl"), "w") as f:
        for c in lines:
            f.write(json.dumps({"prompt": " ".join(c.split()[:4])}) + "\n")
    with open(os.path.join(root, "mc.jsonl"), "w") as f:
        for c in lines:
            w = c.split()
            f.write(
                json.dumps({"q": " ".join(w[:3]), "choices": [" " + " ".join(w[3:6]), " the movie", " bad"], "y": 0})
                + "\n"
            )
    with open(os.path.join(root, "b_gen.yaml"), "w") as f:
        f.write(f"""task: b_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {root}/gen.jsonl}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: ""
generation_kwargs: {{until: ["\\n\\n"], max_gen_toks: {max_tokens}, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
""")
    with open(os.path.join(root, "b_mc.yaml"), "w") as f:
        f.write(f"""task: b_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {root}/mc.jsonl}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{y}}}}"
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
""")
    return root


def evaluate(lm, task: str, tm, batch_size: int, gen_kwargs=None) -> tuple[float, dict, float]:
    """(wall seconds, results, CPU seconds of this process: all threads; robust to other load)."""
    from lm_eval import simple_evaluate

    t0, c0 = time.perf_counter(), time.process_time()
    out = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=tm,
        batch_size=batch_size,
        log_samples=True,
        gen_kwargs=gen_kwargs,
        bootstrap_iters=0,
    )
    return time.perf_counter() - t0, out, time.process_time() - c0


def resps(out: dict, task: str) -> list:
    return [s["resps"] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]


def stats_totals(path) -> dict:
    rows = [json.loads(x) for x in open(path)][1:]
    return {k: sum(r[k] for r in rows) for k in ("strong_tokens", "guide_tokens", "samples")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per backend (the fastest counts)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: steadier timings on a shared machine; 0: torch's default)",
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from w2s_eval.engine import resolve_device
    from w2s_eval.lm_eval_backend.backend import W2SLM

    device = str(resolve_device(args.device))
    root = tempfile.mkdtemp(prefix="w2s_bench_lm_eval_")
    paths = build(root, args.hidden, args.layers)
    tm = TaskManager(include_path=write_tasks(root, args.prompts, args.max_tokens))
    hf = HFLM(pretrained=paths["strong"], device=device, dtype="float32", batch_size=args.batch_size)
    w2s = W2SLM(
        strong=paths["strong"],
        method="base",
        device=device,
        dtype="float32",
        batch_size=args.batch_size,
        stats_path=os.path.join(root, "stats_base"),
    )
    rows, report = (
        [],
        {
            "device": device,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "settings": vars(args),
        },
    )
    for task in ("b_gen", "b_mc"):
        times, cpu = {"hf": [], "w2s": []}, {"hf": [], "w2s": []}
        outs = {}
        for _ in range(args.repeats):
            for name, lm in (("hf", hf), ("w2s", w2s)):
                t, outs[name], c = evaluate(lm, task, tm, args.batch_size)
                times[name].append(t)
                cpu[name].append(c)
        a, b = resps(outs["w2s"], task), resps(outs["hf"], task)
        if task == "b_gen":
            same = a == b
        else:
            same = all(
                abs(float(x[0][0]) - float(y[0][0])) <= 1e-6 * max(1.0, abs(float(y[0][0])))  # float32 sums
                for ra, rb in zip(a, b)
                for x, y in zip(ra, rb)
            )
        ratio = min(times["w2s"]) / min(times["hf"])
        cpu_ratio = min(cpu["w2s"]) / min(cpu["hf"])
        report[task] = {
            "hf_s": min(times["hf"]),
            "w2s_base_s": min(times["w2s"]),
            "ratio": ratio,
            "hf_cpu_s": min(cpu["hf"]),
            "w2s_base_cpu_s": min(cpu["w2s"]),
            "cpu_ratio": cpu_ratio,
            "equal": same,
        }
        rows.append(
            (
                f"{task}: w2s base / hf",
                f"{min(times['w2s']):.2f} s / {min(times['hf']):.2f} s "
                f"(CPU {min(cpu['w2s']):.2f} / {min(cpu['hf']):.2f} s)",
                f"{ratio:.2f} (CPU {cpu_ratio:.2f})",
                "<= 1.1",
                "equal" if same else "DIFFERENT",
            )
        )
    sampled = {"do_sample": True, "temperature": 0.7}
    for label, kw in (("bon(4)", dict(method="bon", n=4)), ("cbs(2,2,30)", dict(method="cbs", w=2, k=2, l=30))):
        stats_dir = os.path.join(root, f"stats_{kw['method']}")
        lm = W2SLM(
            strong=paths["strong"],
            tuned=paths["tuned"],
            untuned=paths["untuned"],
            device=device,
            dtype="float32",
            batch_size=args.batch_size,
            stats_path=stats_dir,
            **kw,
        )
        runs = [evaluate(lm, "b_gen", tm, args.batch_size, gen_kwargs=sampled) for _ in range(args.repeats)]
        t, c = min(r[0] for r in runs), min(r[2] for r in runs)
        totals = {k: v // args.repeats for k, v in stats_totals(lm.stats.path).items()}  # same seeds each run
        report[label] = {"wall_s": t, "cpu_s": c, **totals}
        rows.append(
            (
                f"b_gen T=0.7: {label}",
                f"{t:.2f} s (CPU {c:.2f} s)",
                "",
                "",
                f"strong {totals['strong_tokens']}, guide {totals['guide_tokens']} tokens",
            )
        )
    if "cbs(2,2,30)" in report and "bon(4)" in report:
        report["cbs_over_bon"] = report["cbs(2,2,30)"]["wall_s"] / report["bon(4)"]["wall_s"]
        report["cbs_over_bon_cpu"] = report["cbs(2,2,30)"]["cpu_s"] / report["bon(4)"]["cpu_s"]
        rows.append(
            ("CBS(2,2,30) / BoN(4)", "", f"{report['cbs_over_bon']:.2f} (CPU {report['cbs_over_bon_cpu']:.2f})", "", "")
        )
    print(
        f"\n{args.prompts} prompts, {args.max_tokens} new tokens, batch {args.batch_size}, strong "
        f"{args.hidden}x{args.layers}, device {device}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads\n"
    )
    print("| measurement | time | ratio | target | check |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    ok = all(report[t]["equal"] for t in ("b_gen", "b_mc"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
