"""Benchmark: CBS over an OpenAI-compatible endpoint (vLLM) vs one request at a time vs local transformers.

    python bench/bench_endpoint.py --model toy       # a tiny random Llama (fast, any machine with vLLM)
    python bench/bench_endpoint.py --model smollm2   # SmolLM2-135M-Instruct from the pinned offline wheel
    python bench/bench_endpoint.py --endpoint http://127.0.0.1:8000/v1 --served-name NAME --model-dir DIR

Starts a loopback vLLM (``W2S_VLLM_PYTHON``, see scripts/setup_vllm.sh) unless ``--endpoint`` is given.
The same prompts, seeds and guides (two small random guide LMs with the strong model's
tokenizer: the implicit value log p_tuned - log p_untuned) run on three strong engines:
the endpoint with requests in flight together, the endpoint one request at a time, and
the local transformers engine. Time is split into strong (inside ``Session.extend``: the
server's work plus HTTP for the endpoint), guides (the scorer) and the rest (search, client).
Writes a JSON record (config, versions, times, ratios) to ``--out``.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # devtools/ (tiny models, launchers)

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from devtools.vllm_server import save_test_model, start_vllm, vllm_python
from w2s_eval.config import SamplingConfig, parse_method
from w2s_eval.endpoint import EndpointPolicy
from w2s_eval.engine import load_causal_lm
from w2s_eval.guide import GuideLM, ImplicitValueScorer
from w2s_eval.policy import TransformersPolicy
from w2s_eval.search import chunk_beam_search

PROMPTS = [
    "The movie was",
    "I loved it",
    "Here is a movie review from imdb: ",
    "Hello, world!",
    "The acting was",
    "This film is",
    "I hated the plot",
    "The director",
]


class Timed:
    """Wraps a policy (time in ``extend``) or a scorer (time in ``score``)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0
        self.name = getattr(inner, "name", "timed")

    def start(self, prompts, cfg, seeds):
        session, outer = self.inner.start(prompts, cfg, seeds), self

        class Session:
            strong_tokens = property(lambda self: session.strong_tokens)
            guide_tokens = property(lambda self: session.guide_tokens)

            def extend(self, parents, k, max_tokens):
                t0 = time.perf_counter()
                try:
                    return session.extend(parents, k, max_tokens)
                finally:
                    outer.seconds += time.perf_counter() - t0

        return Session()

    def score(self, prompts, responses, finished):
        t0 = time.perf_counter()
        try:
            return self.inner.score(prompts, responses, finished)
        finally:
            self.seconds += time.perf_counter() - t0


def random_guide(path: str, tokenizer_dir: str, seed: int) -> str:
    """A small random Llama guide (hidden 64, 2 layers) with the strong model's tokenizer."""
    from devtools.toy import build_causal_lm

    return build_causal_lm(path, tokenizer_dir, hidden=64, layers=2, seed=seed, init_std=0.02)


def strong_dir(kind: str, root: Path) -> str:
    if kind == "toy":
        return save_test_model(str(root / "strong"))
    from w2s_eval.assets import cache_home
    from w2s_eval.world.strong import GGUF_SOURCE, save_strong

    out = root / "strong"
    save_strong(GGUF_SOURCE, out, cache_home())
    return str(out)


def run(policy, scorer, method, cfg, n_prompts, batch_size):
    prompts = (PROMPTS * ((n_prompts + len(PROMPTS) - 1) // len(PROMPTS)))[:n_prompts]
    tp, ts = Timed(policy), Timed(scorer)
    search = parse_method(method).search
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(prompts), batch_size):
        results += chunk_beam_search(prompts[i : i + batch_size], tp, ts, search, cfg)
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 3),
        "strong_s": round(tp.seconds, 3),
        "guides_s": round(ts.seconds, 3),
        "rest_s": round(wall - tp.seconds - ts.seconds, 3),
        "strong_tokens": sum(r.stats["strong_tokens"] for r in results),
        "guide_tokens": sum(r.stats["guide_tokens"] for r in results),
        "mean_response_tokens": sum(r.beams[0].n_tokens for r in results) / len(results),
        "texts": [r.text for r in results],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["toy", "smollm2"], default="toy")
    ap.add_argument("--endpoint", help="use this running server instead of starting one")
    ap.add_argument("--served-name", default="strong")
    ap.add_argument("--model-dir", help="the served model's directory (for the local run and the guides)")
    ap.add_argument("--method", default="cbs:w=4,k=4,l=5")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="torch threads here and OMP threads of the server")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="bench_endpoint_"))
    model_dir = args.model_dir or strong_dir(args.model, root)
    server, url, name = None, args.endpoint, args.served_name
    if url is None:
        if vllm_python() is None:
            print("no vLLM: run scripts/setup_vllm.sh DIR and set W2S_VLLM_PYTHON=DIR/bin/python", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        server = start_vllm(
            model_dir,
            name,
            max_model_len=args.max_model_len,
            kv_cache_gib=2,
            cache_root=str(root / "cache"),
            log_path=str(root / "vllm.log"),
            threads=args.threads,
            ready_timeout=600,
        )
        url, ready_s = server.base_url, time.perf_counter() - t0
        print(f"vLLM ready at {url} in {ready_s:.0f} s", file=sys.stderr)
    try:
        tuned = load_causal_lm(random_guide(str(root / "tuned"), model_dir, 1), dtype="float32", device="cpu")
        untuned = load_causal_lm(random_guide(str(root / "untuned"), model_dir, 2), dtype="float32", device="cpu")
        scorer = ImplicitValueScorer(GuideLM(tuned), GuideLM(untuned), 1.0)
        cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=args.max_new_tokens, seed=0)
        engines = {
            "endpoint_concurrent": EndpointPolicy(url, name, max_concurrency=64),
            "endpoint_sequential": EndpointPolicy(url, name, max_concurrency=1),
            "local_transformers": TransformersPolicy(load_causal_lm(model_dir, dtype="float32", device="cpu")),
        }
        run(engines["endpoint_concurrent"], scorer, "cbs:w=1,k=2,l=5", cfg, 2, 2)  # warm-up
        out = {}
        for key, pol in engines.items():
            out[key] = run(pol, scorer, args.method, cfg, args.prompts, args.batch_size)
            if isinstance(pol, EndpointPolicy):
                out[key]["client"] = pol.client.stats.as_dict()
            print(key, {k: v for k, v in out[key].items() if k != "texts"}, file=sys.stderr)
        c, s, loc = (out[k]["wall_s"] for k in engines)
        record = {
            "bench": "endpoint",
            "model": args.model,
            "model_dir": model_dir,
            "method": args.method,
            "prompts": args.prompts,
            "batch_size": args.batch_size,
            "sampling": cfg.__dict__,
            "threads": args.threads,
            "results": out,
            "ratios": {
                "sequential_over_concurrent": round(s / c, 2),
                "local_over_endpoint_concurrent": round(loc / c, 2),
            },
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": __import__("transformers").__version__,
            },
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        }
        text = json.dumps(record, indent=1, default=str)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
        print(json.dumps(record["ratios"]))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
