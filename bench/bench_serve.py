"""Benchmark: ``w2s-eval serve`` answering concurrent requests (continuous batching) vs one at a time.

    python bench/bench_serve.py                     # tiny models, CPU, 1 server thread
    python bench/bench_serve.py --threads 4 --requests 64 --method cbs:w=4,k=4,l=5

Builds tiny offline models (a strong Llama of 4 layers x 256, trained a few seconds on the toy corpus so
it writes word-like text, and two 2 x 64 guides with its tokenizer), starts the server on loopback, then
sends the same ``--requests`` completion requests (one prompt each, its own seed) one at a time and all at
once from as many client threads, ``--repeats`` times each. Checks that both ways give the same texts and
reports min / median wall time and the ratio sequential / concurrent. Writes a JSON record to ``--out``.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # devtools/ (tiny models, launchers)

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = [
    "The movie was",
    "I loved the",
    "Hello, world!",
    "This film is a",
    "The actor and the director",
    "We hated it but",
    "A wonderful story of",
    "Here is a movie review from imdb: ",
]


def build_models(root: Path, train_steps: int) -> dict:
    from devtools.toy import build_strong_and_guides, train_causal_lm

    out = build_strong_and_guides(str(root), 256, 4, init_std=0.02)
    if train_steps:
        for i, name in enumerate(("strong", "tuned", "untuned")):
            train_causal_lm(out[name], steps=train_steps if name == "strong" else train_steps // 2, seed=i)
    return out


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())


def timed(fn) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "load_avg_1m_at_end": os.getloadavg()[0],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cbs:w=4,k=4,l=5")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--max-batch-prompts", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="JSON record (default: bench/results/serve_<host>.json)")
    args = ap.parse_args(argv)

    from devtools.serve_process import start_serve

    root = Path(tempfile.mkdtemp(prefix="w2s-bench-serve-"))
    t0 = time.perf_counter()
    models = build_models(root, args.train_steps)
    build_s = time.perf_counter() - t0
    server = start_serve(
        [
            "--strong",
            models["strong"],
            "--tuned",
            models["tuned"],
            "--untuned",
            models["untuned"],
            "--dtype",
            "float32",
            "--device",
            args.device,
            "--method",
            args.method,
            "--max-batch-prompts",
            str(args.max_batch_prompts),
            "--max-tokens",
            str(args.max_tokens),
        ],
        str(root / "serve.log"),
        threads=args.threads,
    )
    bodies = [
        {
            "model": "w2s",
            "prompt": PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)),
            "seed": i,
            "max_tokens": args.max_tokens,
            "temperature": 0.7,
            "top_k": 50,
        }
        for i in range(args.requests)
    ]
    try:
        post(server.url, bodies[0])  # warm-up
        seq, conc, texts = [], [], {}
        for _ in range(args.repeats):
            s, outs = timed(lambda: [post(server.url, b) for b in bodies])
            seq.append(s)
            texts["sequential"] = [o["choices"][0]["text"] for o in outs]
            with ThreadPoolExecutor(len(bodies)) as pool:
                c, outs = timed(lambda: list(pool.map(lambda b: post(server.url, b), bodies)))
            conc.append(c)
            texts["concurrent"] = [o["choices"][0]["text"] for o in outs]
            if texts["sequential"] != texts["concurrent"]:
                raise AssertionError("concurrent requests gave other texts than sequential ones")
        health = server.health()
    finally:
        server.stop()
    record = {
        "config": vars(args),
        "machine": machine(),
        "model_build_s": round(build_s, 1),
        "sequential_s": {"min": min(seq), "median": statistics.median(seq), "all": seq},
        "concurrent_s": {"min": min(conc), "median": statistics.median(conc), "all": conc},
        "ratio_min": min(seq) / min(conc),
        "ratio_median": statistics.median(seq) / statistics.median(conc),
        "texts_equal": True,
        "server_batches": health,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"serve_{platform.node() or 'host'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"{args.requests} requests of {args.method}, {args.max_tokens} tokens, server threads {args.threads}: "
        f"sequential min {min(seq):.2f} s / median {statistics.median(seq):.2f} s; concurrent min {min(conc):.2f} s "
        f"/ median {statistics.median(conc):.2f} s; ratio {record['ratio_min']:.1f}x (min) "
        f"{record['ratio_median']:.1f}x (median); texts equal; record {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
