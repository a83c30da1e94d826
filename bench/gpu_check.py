"""The GPU check: one script that, from a bare machine with this repository, runs the CUDA tests, the speed table
against the seed's code path, peak memory and an out-of-memory split, and writes ``gpu_check.json`` and
``gpu_check.md`` under ``--out`` (``bench/gpu_check.sh`` runs it with ``$OUT``).

    python bench/gpu_check.py --out DIR              # on a GPU (about 3-5 minutes on one H100 / H200)
    python bench/gpu_check.py --out DIR --rehearse   # every size shrunk, on the CPU (a CI test runs it)

Steps (each one's failure is recorded and the next runs; the exit status is 1 if any check failed):

1. ``tests``: the CUDA tests of the suite with ``W2S_TEST_DEVICE=cuda`` (pytest): CBS(1,1,L) equals HF
   ``generate(do_sample=True)`` with the seed, for six architectures and L = 1, 3, inf; incremental guide scoring
   equals full re-scoring (float32, 1e-4); reordered KV caches equal recomputation; out-of-memory splits equal
   unsplit runs (injected OOM); the in-place KV cache equals a DynamicCache.
2. ``guide``: incremental guide scoring against full re-scoring on a guide of the imdb-mini shape (Llama 4 x 256,
   49,152 tokens), three CBS-like rounds, in float32 and bfloat16: the largest difference of a summed log-prob,
   relative to the sum's magnitude; passes at <= 1e-4 (float32) and <= 2e-2 (bfloat16).
3. ``sampling``: CBS(1,1,L) against HF sampling on the SmolLM2-135M-shaped model (float32; L = 1, 5, inf): equal
   texts; in bfloat16 the share of equal texts is reported (kernels of other shapes may round apart).
4. ``speed``: ``bench/bench_search.py``'s paths (the seed's code path, w2s CBS(4,4,5), BoN(16), sample 16) on models
   of the shapes of SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct with two guides of the imdb-mini shape,
   bfloat16, 32 prompts (the seed path 8), 50 new tokens, 3 alternating repeats; s/prompt, speed-up over the seed
   path, GFLOP per prompt (w2s_eval.flops), and each path's peak GPU memory.
5. ``oom``: CBS(4,4,5) on 32 prompts again under a memory cap (``torch.cuda.set_per_process_memory_fraction``)
   half-way between the models' memory and the unsplit peak: the passes that no longer fit are split
   (``w2s_eval.lm.split_on_oom``); the texts are compared with the unsplit run's (float32).

No weights travel: the models are built from their configs with random weights (the same shapes, so the same
compute; random weights never sample EOS, so every response has all its tokens). The tokenizer is a byte-level one
with the models' vocabulary size whose tokens above the 256 bytes are words ``<tN>``, so a sampled token is one
guide token, as with the SmolLM2 tokenizer the imdb-mini guides share; prompts are 12 such words.
``--tokenizers DIR`` (holding ``smollm2-135m/`` and ``qwen2.5-0.5b/`` tokenizer folders) uses real tokenizers
instead. ``--rehearse`` shrinks every size (hidden 64, 2 layers, vocabulary 1,024, 4 prompts, 8 new tokens, one
repeat, a pytest subset) and runs on the CPU, with the OOM injected as ``tests/test_oom.py`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.model_configs import GUIDE  # noqa: E402
from devtools.model_configs import STRONG as STRONG_CONFIGS  # noqa: E402
from w2s_eval import (  # noqa: E402
    GuideLM,
    SamplingConfig,
    SearchConfig,
    TransformersPolicy,
    chunk_beam_search,
)
from w2s_eval.lm import CausalLM, OutOfMemoryError  # noqa: E402

STRONG = {name: STRONG_CONFIGS[name] for name in ("smollm2-135m", "qwen2.5-0.5b")}
TINY = dict(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "bench" / "bench_search.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- models
def word_tokenizer(vocab: int, base: int = 0):
    """A byte-level tokenizer of ``vocab`` tokens: the 256 bytes, words, and ``</s>`` (EOS, pad). Word i is
    ``<ti>``; with ``base`` (the guides' word count, when this vocabulary is larger), word i >= base is
    ``<t{i % base}><t{i // base - 1}>``: two guide words, as a strong model's rarer tokens read as two of a smaller
    vocabulary's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    n = vocab - 256 - 1
    base = base or n
    tok.add_tokens([f"<t{i % base}>" + (f"<t{i // base - 1}>" if i >= base else "") for i in range(n)])
    tok.add_special_tokens(["</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>")


def build(config: dict, tok, dtype, device, seed: int, name: str) -> CausalLM:
    """A model of ``config``'s shape with random weights (std 0.02), on ``device`` in ``dtype``."""
    import transformers

    cfg = transformers.AutoConfig.for_model(
        **{**config, "vocab_size": len(tok)},
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return CausalLM(model.eval(), tok, name)


def models_for(strong: str, args, dtype) -> dict:
    """Strong model ``strong``'s shape and two guides of the imdb-mini shape, with their tokenizers and prompts."""
    shrink = TINY if args.rehearse else {}
    if args.tokenizers:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(Path(args.tokenizers) / strong)
        guide_tok = AutoTokenizer.from_pretrained(Path(args.tokenizers) / "smollm2-135m")
        prompts = [f"Here is a movie review from imdb: {w}" for w in _words(args.prompts, 6, len(tok), 1)]
    else:
        vocab = shrink.get("vocab_size", STRONG[strong]["vocab_size"])
        guide_tok = word_tokenizer(shrink.get("vocab_size", GUIDE["vocab_size"]))
        tok = guide_tok if vocab == len(guide_tok) else word_tokenizer(vocab, len(guide_tok) - 257)
        prompts = [" ".join(f"<t{i}>" for i in row) for row in _words(args.prompts, 12, len(guide_tok) - 257, 0)]
    out = {
        "strong": build({**STRONG[strong], **shrink}, tok, dtype, args.device, 0, "strong"),
        "prompts": prompts,
        "what": f"{strong} shape" + (" (rehearsal: shrunk)" if args.rehearse else ""),
    }
    for seed, name in ((1, "tuned"), (2, "untuned")):
        out[name] = build({**GUIDE, **shrink}, guide_tok, dtype, args.device, seed, name)
    return out


def _words(n: int, length: int, top: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max(top, 2), (n, length), generator=g).tolist()


# ----------------------------------------------------------------------------- steps
def step_tests(args) -> dict:
    """The suite's CUDA tests (pytest in a subprocess; in a rehearsal a CPU subset)."""
    tests = ["tests/test_arch_conformance.py", "tests/test_oom.py", "tests/test_speed_invariants.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    if args.rehearse:
        cmd += ["-k", "llama and (generate or incremental_guide_equals)"]
    env = dict(os.environ, W2S_TEST_DEVICE=args.device, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.test_timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped)", tail[0])}
    return {
        "ok": proc.returncode == 0 and counts.get("passed", 0) > 0,
        "summary": tail[0],
        "counts": counts,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(cmd[2:]),
        "output_tail": (proc.stdout + proc.stderr)[-3000:] if proc.returncode else "",
    }


def step_guide(args) -> dict:
    """Incremental guide vs full re-scoring, float32 and bfloat16, on a guide of the imdb-mini shape."""
    out = {"ok": True}
    for name in ("float32", "bfloat16"):
        dtype = getattr(torch, name)
        tok = word_tokenizer(TINY["vocab_size"] if args.rehearse else GUIDE["vocab_size"])
        lm = build({**GUIDE, **(TINY if args.rehearse else {})}, tok, dtype, args.device, 1, "guide")
        n = 4 if args.rehearse else 16
        prompts = [" ".join(f"<t{i}>" for i in row) for row in _words(n, 12, len(tok) - 257, 3)]
        words = _words(n, 3 * args.new_tokens, len(tok) - 257, 4)
        inc, full = GuideLM(lm), GuideLM(lm, incremental=False)
        worst = 0.0
        for r in range(1, 4):  # three rounds, each response a longer prefix of the last
            responses = [" " + " ".join(f"<t{i}>" for i in row[: r * args.new_tokens]) for row in words]
            finished = [r == 3 and i % 2 == 0 for i in range(len(responses))]
            a = inc.logprob_sums(prompts, responses, finished)[0]
            b = full.logprob_sums(prompts, responses, finished)[0]
            worst = max(worst, float(((a - b).abs() / b.abs().clamp(min=1.0)).max()))
        out[name] = {"max_relative_difference": worst, "tolerance": TOLERANCE[name], "ok": worst <= TOLERANCE[name]}
        out["ok"] &= out[name]["ok"]
        del lm, inc, full
    return out


def step_sampling(args) -> dict:
    """CBS(1,1,L) vs HF sampling on the SmolLM2-135M-shaped model: float32 equal; bfloat16 reported."""
    out = {"ok": True}
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=args.new_tokens)
    for name in ("float32", "bfloat16"):
        m = models_for("smollm2-135m", argparse.Namespace(**{**vars(args), "prompts": 4}), getattr(torch, name))
        lm, seeds = m["strong"], [11, 12, 13, 14]
        refs = []
        for prompt, seed in zip(m["prompts"], seeds):
            ids = lm.tokenizer(prompt, return_tensors="pt").to(lm.device)
            torch.manual_seed(seed)
            gen = lm.model.generate(
                **ids, do_sample=True, max_new_tokens=args.new_tokens, temperature=0.7, top_k=50, pad_token_id=lm.pad_id
            )
            refs.append(lm.tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
        equal = {}
        for chunk in (1, 5, None):
            res = chunk_beam_search(
                m["prompts"], TransformersPolicy(lm), None, SearchConfig(1, 1, chunk), cfg, seeds=seeds
            )
            equal[str(chunk or "inf")] = sum(r.text == t for r, t in zip(res, refs)) / len(refs)
        out[name] = {"share_equal": equal, "ok": name != "float32" or all(v == 1.0 for v in equal.values())}
        out["ok"] &= out[name]["ok"]
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_speed(args, bench, strong: str) -> dict:
    """bench_search's paths on one strong shape: times, speed-ups, GFLOP, peak memory per path."""
    device = torch.device(args.device)
    m = models_for(strong, args, getattr(torch, args.dtype))
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=args.new_tokens, seed=0)
    paths = bench.make_paths(m, cfg, 4, 4, 5, len(m["prompts"]))
    with bench.Timers(m["strong"], [m["tuned"], m["untuned"]], device) as timers:
        for run in paths.values():  # warm-up
            run(m["prompts"][:1])
        res = bench.measure(paths, m["prompts"], args.seed_prompts, args.repeats, timers, device)
    for name, run in paths.items():
        res[name]["peak_memory_gib"] = _peak(
            run, m["prompts"][: args.seed_prompts] if name == "seed path" else m["prompts"], device
        )
    return {
        "ok": True,
        "models": m["what"],
        "table": bench.report(res),
        "results": res,
        "params": {k: bench.params(m[k]) for k in ("strong", "tuned", "untuned")},
    }


def _peak(run, prompts, device) -> float:
    """Peak memory of one run: GPU memory allocated (CUDA), else the process's max RSS so far (CPU), GiB."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        run(prompts)
        _sync(device)
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    run(prompts)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


@contextlib.contextmanager
def _injected_oom(lm, max_rows):
    """(CPU rehearsal) raise OutOfMemoryError on passes over more than ``max_rows`` rows, as tests/test_oom.py."""
    last = lm.model.base_model.layers[-1]

    def hook(module, a, kw):
        if (a[0] if a else kw["hidden_states"]).shape[0] > max_rows:
            raise OutOfMemoryError(f"injected: more than {max_rows} rows")

    handle = last.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _memory_cap(device, fraction: float):
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def step_oom(args) -> dict:
    """CBS(4,4,5) under a memory cap between the models' memory and the unsplit peak: split, same texts."""
    from w2s_eval import ImplicitValueScorer

    device = torch.device(args.device)
    m = models_for("smollm2-135m", args, torch.float32)
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=args.new_tokens, seed=0)

    def run():
        scorer = ImplicitValueScorer(GuideLM(m["tuned"]), GuideLM(m["untuned"]))
        return chunk_beam_search(m["prompts"], TransformersPolicy(m["strong"]), scorer, SearchConfig(4, 4, 5), cfg)

    import w2s_eval.lm

    w2s_eval.lm._OOM_WARNED.clear()  # a split is logged as a warning the first time per model
    records = []
    handler = logging.Handler()
    handler.emit = lambda rec: records.append(rec.getMessage())
    logging.getLogger("w2s_eval.lm").addHandler(handler)
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            ref = run()
            peak = torch.cuda.max_memory_allocated(device)
            cap = base + (peak - base) / 2
            total = torch.cuda.get_device_properties(device).total_memory
            with _memory_cap(device, cap / total):
                got = run()
            limit = {"models_gib": base / 2**30, "unsplit_peak_gib": peak / 2**30, "cap_gib": cap / 2**30}
        else:
            ref = run()
            with _injected_oom(m["strong"], 8), _injected_oom(m["tuned"], 8):
                got = run()
            limit = {"injected": "passes over more than 8 rows of the strong model and the tuned guide"}
    finally:
        logging.getLogger("w2s_eval.lm").removeHandler(handler)
    equal = sum(a.text == b.text for a, b in zip(ref, got)) / len(ref)
    split = [r for r in records if "ran out of memory" in r]
    return {"ok": bool(split) and equal == 1.0, "split_logged": split, "share_equal_texts": equal, **limit}


# ----------------------------------------------------------------------------- report
def markdown(doc: dict) -> str:
    lines = [
        f"# GPU check: {doc['device']}",
        "",
        f"{doc['env']}; {doc['date']}; commit {doc['git']}; "
        f"{'REHEARSAL (shrunk sizes, CPU)' if doc['rehearse'] else 'full sizes'}",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for name, r in doc["steps"].items():
        if "table" in r:
            continue
        detail = r.get("summary") or {k: v for k, v in r.items() if k not in ("ok", "output_tail", "error", "seconds")}
        verdict = f"{'pass' if r.get('ok') else 'FAIL'} ({r.get('seconds')} s)"
        lines.append(f"| {name} | {verdict}: {r.get('error') or detail} |")
    for name, r in doc["steps"].items():
        if "table" in r:
            peaks = "; ".join(f"{k} {v['peak_memory_gib']} GiB" for k, v in r["results"].items())
            lines += ["", f"## {name}: {r['models']}", "", r["table"], "", f"peak memory: {peaks}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="where gpu_check.json and gpu_check.md go")
    ap.add_argument("--rehearse", action="store_true", help="shrink every size and run on the CPU")
    ap.add_argument("--tokenizers", help="a folder with smollm2-135m/ and qwen2.5-0.5b/ tokenizers (else synthetic)")
    ap.add_argument("--steps", default="tests,guide,sampling,speed,oom", help="the steps to run")
    ap.add_argument("--test-timeout", type=int, default=300)
    args = ap.parse_args(argv)
    defaults = (
        dict(device="cpu", dtype="float32", prompts=4, seed_prompts=2, new_tokens=8, repeats=1)
        if args.rehearse
        else dict(device="cuda", dtype="bfloat16", prompts=32, seed_prompts=8, new_tokens=50, repeats=3)
    )
    for k, v in defaults.items():
        setattr(args, k, v)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --rehearse to run the check on the CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(1 if args.rehearse else torch.get_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    import transformers

    doc = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "env": f"torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU cores",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "git": _git(),
        "rehearse": args.rehearse,
        "settings": {k: getattr(args, k) for k in defaults},
        "steps": {},
    }
    bench = load_bench()
    steps = {
        "tests": lambda: step_tests(args),
        "guide": lambda: step_guide(args),
        "sampling": lambda: step_sampling(args),
        "oom": lambda: step_oom(args),
    }
    for strong in STRONG:
        steps[f"speed {strong}"] = lambda s=strong: step_speed(args, bench, s)
    wanted = args.steps.split(",")
    for name, fn in steps.items():
        if name.split(" ")[0] not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            doc["steps"][name] = fn()
        except Exception as e:  # one step's failure is recorded; the others still run
            doc["steps"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        doc["steps"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(
            f"{name}: {'pass' if doc['steps'][name]['ok'] else 'FAIL'} ({doc['steps'][name]['seconds']} s)", flush=True
        )
        (out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=str))
        (out / "gpu_check.md").write_text(markdown(doc))
    ok = all(s["ok"] for s in doc["steps"].values())
    print(markdown(doc))
    return 0 if ok else 1


def _git() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
