"""Benchmark of the search engine against the seed's own code path, reported as ratios measured side by side.

Paths (same prompts, same sampling: temperature, top-k as the seed's imdb script; same guides):

- seed path: a faithful copy of what ZHZisZZ/weak-to-strong-search does (CBSPosthocGenerationMixin._search and
  ImplicitValueScorer): one prompt at a time; its W*K rows in one forward pass per token (the prompt prefilled in
  every row); the strong KV cache kept and reordered with ``Cache.reorder_cache`` after each selection; finished
  rows fed padding until all rows finish; every chunk the rows are decoded, re-tokenized and BOTH guides
  re-score the full prompt + response of all W*K rows (joint tokenization, right padding, no cache,
  ``log_softmax`` over the vocabulary); ``torch.manual_seed`` per prompt.
- w2s CBS: ``chunk_beam_search`` over all prompts at once (the engine of this package).
- w2s BoN(16): CBS(1, 16, inf), one final guide scoring.    - sample 16: 16 samples per prompt, no guide.
- (optional, ``--naive-prompts``) "no KV cache": HF ``generate`` re-encoding every prefix each chunk. This is
  weaker than the seed's code and is not a baseline for any headline figure.

Model work is counted in FLOPs by the formula of ``w2s_eval.flops`` (2 x N + attention per token position, per
model: the strong model and EACH guide with its own token count; real tokens, padding not counted; the seed path's
finished rows, fed padding tokens as real positions, are counted as it runs them) and the FLOP ratio (seed / path)
is printed beside the measured speed-up. ``--recompute FILE`` restates the FLOP columns of a JSON written before
this count (which multiplied the guides' summed tokens by both guides' parameters: twice the guides' work).
Time per round is split into strong forward, guide forward, cache reorder, tokenization/decoding and the rest
(Python) by timers around the models' forward, ``DynamicCache.reorder_cache`` and the tokenizers' calls (on during
every repeat).

    python bench/bench_search.py                        # tiny models built offline (devtools.toy)
    python bench/bench_search.py --strong smollm2-135m  # SmolLM2-135M + imdb-mini guides (or guides of their shape)
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
from collections import defaultdict
from pathlib import Path

import torch
from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from devtools.toy import CORPUS, build_strong_and_guides, train_causal_lm
from w2s_eval import (
    CausalLM,
    GuideLM,
    ImplicitValueScorer,
    SamplingConfig,
    SearchConfig,
    TransformersPolicy,
    chunk_beam_search,
    load_causal_lm,
)
from w2s_eval.flops import Cost, add_costs, flops_of
from w2s_eval.lm import cache_kwarg
from w2s_eval.policy import prompt_seed

PARTS = ("strong", "guide", "reorder", "tokenize")


class Timers:
    """Wall time of the strong model's forward, the guides' forward, cache reorders and tokenizer calls
    (outermost call only); installed as forward hooks and wrappers, removed on exit."""

    def __init__(self, strong: CausalLM, guides: list, device: torch.device):
        self.strong, self.guides, self.device = strong, guides, device
        self.seconds = defaultdict(float)
        self._depth, self._undo = 0, []

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _wrap(self, part, fn):
        def timed(*a, **kw):
            if self._depth:
                return fn(*a, **kw)
            self._depth += 1
            self._sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._sync()
                self.seconds[part] += time.perf_counter() - t0
                self._depth -= 1

        return timed

    def __enter__(self):
        for part, lms in (("strong", [self.strong]), ("guide", self.guides)):
            for lm in lms:
                self._undo.append(lm.model.register_forward_pre_hook(lambda *a, p=part: self._start(p)).remove)
                self._undo.append(lm.model.register_forward_hook(lambda *a, p=part: self._stop(p)).remove)
        reorder = DynamicCache.__dict__.get("reorder_cache")
        DynamicCache.reorder_cache = self._wrap("reorder", DynamicCache.reorder_cache)
        self._undo.append(
            lambda o=reorder: setattr(DynamicCache, "reorder_cache", o) if o else delattr(DynamicCache, "reorder_cache")
        )
        for cls in {type(lm.tokenizer) for lm in [self.strong] + self.guides}:  # tok(...) looks up the class
            for name in ("__call__", "encode", "decode", "batch_decode"):
                original = cls.__dict__.get(name)
                setattr(cls, name, self._wrap("tokenize", getattr(cls, name)))
                self._undo.append(lambda c=cls, n=name, o=original: setattr(c, n, o) if o else delattr(c, n))
        return self

    def _start(self, part):
        self._depth += 1
        self._sync()
        self._t0 = time.perf_counter()

    def _stop(self, part):
        self._sync()
        self.seconds[part] += time.perf_counter() - self._t0
        self._depth -= 1

    def __exit__(self, *exc):
        while self._undo:
            self._undo.pop()()

    def take(self) -> dict:
        out, self.seconds = dict(self.seconds), defaultdict(float)
        return out


# --------------------------------------------------------------------------- the seed's code path
def seed_scores(guides, prompt: str, responses: list, eos: list) -> tuple:
    """ImplicitValueScorer of the seed: per guide, tok(prompt) and tok(prompt + response) (+EOS if finished),
    labels masked over their common prefix, right padding, a full forward, log_softmax, gather; no cache.
    Returns (scores [N], {guide name: Cost}): each guide's token positions and FLOPs, every row from scratch."""
    total, costs = 0.0, {}
    for sign, lm in zip((1.0, -1.0), guides):
        tok, rows, starts = lm.tokenizer, [], []
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for r, e in zip(responses, eos):
            ids = tok(prompt + r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
            n = 0
            while n < min(len(p_ids), len(ids)) and p_ids[n] == ids[n]:
                n += 1
            rows.append(ids)
            starts.append(n)
        width = max(map(len, rows))
        ids = torch.tensor([r + [lm.pad_id] * (width - len(r)) for r in rows], device=lm.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=lm.device)
        labels = ids.masked_fill(mask == 0, -100)
        for i, n in enumerate(starts):
            labels[i, :n] = -100
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
        labels, logits = labels[:, 1:], logits[:, :-1]
        keep = labels != -100
        logps = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
        total = total + sign * (logps * keep).sum(-1)
        cost = costs.setdefault(lm.name, Cost())
        for row in rows:
            cost.add_forward(len(row), flops_of(lm.shape, len(row)))
    return total, costs


@torch.inference_mode()
def seed_cbs(
    prompt_ids: list, prompt: str, strong: CausalLM, guides, W: int, K: int, L: int, cfg: SamplingConfig, seed: int
) -> tuple:
    """CBSPosthocGenerationMixin._search of the seed for one prompt; (best response text, counts): ``strong`` and
    ``guide`` token positions (both guides), ``rounds``, and ``compute`` {model name: Cost}."""
    torch.manual_seed(seed)
    tok, model, dev = strong.tokenizer, strong.model, strong.device
    warp = LogitsProcessorList(
        [TemperatureLogitsWarper(cfg.temperature)] + ([TopKLogitsWarper(cfg.top_k)] if cfg.top_k else [])
    )
    ids = torch.tensor([prompt_ids], device=dev).repeat(W * K, 1)
    attn, cache = torch.ones_like(ids), DynamicCache()
    cache_arg = cache_kwarg(type(model))  # the seed passes past_key_values=, deprecated in transformers 5
    unfinished = torch.ones(W * K, dtype=torch.long, device=dev)  # 1 = still running
    eos = torch.tensor(strong.eos_ids, device=dev)
    prompt_text, P = tok.decode(ids[0]), ids.shape[1]
    counts, remain, step_input = {"strong": 0, "guide": 0, "rounds": 0}, L, ids
    compute = {strong.name: Cost()}
    while True:
        logits = model(input_ids=step_input, attention_mask=attn, use_cache=True, **{cache_arg: cache}).logits
        counts["strong"] += step_input.numel()
        rows, n = step_input.shape
        if n > 1:  # the prompt in every row, from no cache
            compute[strong.name].add_prefill(rows * n, rows * flops_of(strong.shape, n))
        else:  # one token a row (finished rows too, fed padding), attending to every position so far
            compute[strong.name].add_forward(rows, rows * flops_of(strong.shape, 1, attn.shape[1] - 1))
        probs = torch.softmax(warp(ids, logits[:, -1, :].float()), dim=-1)
        nxt = torch.multinomial(probs, 1).squeeze(1)
        nxt = nxt * unfinished + strong.pad_id * (1 - unfinished)
        ids, attn = torch.cat([ids, nxt[:, None]], 1), torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        step_input, remain = nxt[:, None], remain - 1
        stop = torch.isin(nxt, eos) | (ids.shape[1] - P >= cfg.max_new_tokens)  # EosToken-, MaxLengthCriteria
        unfinished = unfinished * (~stop).long()
        if remain <= 0 or unfinished.max() == 0:
            remain = L
            texts = [t[len(prompt_text) :] for t in tok.batch_decode(ids)]  # extract_responses(..., prompt=)
            texts = [tok.decode(tok(t)["input_ids"], skip_special_tokens=True) for t in texts]
            scores, guide_costs = seed_scores(guides, prompt, texts, (unfinished == 0).tolist())
            counts["guide"] += sum(c.tokens for c in guide_costs.values())
            add_costs(compute, guide_costs)
            counts["rounds"] += 1
            beam_idx = torch.topk(scores, W, dim=0).indices.repeat(K)
            ids, unfinished = ids[beam_idx], unfinished[beam_idx]
            cache.reorder_cache(beam_idx)
        if unfinished.max() == 0:
            return tok.decode(ids[0, P:], skip_special_tokens=True), {**counts, "compute": compute}


def naive_cbs(prompt: str, strong: CausalLM, scorer, W: int, K: int, L: int, cfg: SamplingConfig) -> dict:
    """ "No KV cache" (NOT the seed's code): HF generate re-encoding each prefix every chunk, per beam."""
    tok, eos = strong.tokenizer, set(strong.eos_ids)
    torch.manual_seed(prompt_seed(cfg.seed, prompt) % (2**31))
    prompt_ids, beams = tok.encode(prompt), [([], False)]
    while any(not f for _, f in beams):
        cands = [b for b in beams if b[1]]
        for resp, _ in (b for b in beams if not b[1]):
            x = torch.tensor([prompt_ids + resp], device=strong.device)
            out = strong.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                top_k=cfg.top_k or None,
                temperature=cfg.temperature,
                max_new_tokens=min(L, cfg.max_new_tokens - len(resp)),
                num_return_sequences=W * K if not resp else K,
                pad_token_id=strong.pad_id,
            )
            for row in out[:, x.shape[1] :].tolist():
                cut = next((i for i, t in enumerate(row) if t in eos), None)
                full = resp + row[:cut]
                cands.append((full, cut is not None or len(full) >= cfg.max_new_tokens))
        texts = tok.batch_decode([c[0] for c in cands], skip_special_tokens=True)
        scores = scorer([prompt] * len(cands), texts, [c[1] for c in cands]).tolist()
        beams = [cands[i] for i in sorted(range(len(cands)), key=lambda i: -scores[i])[:W]]
    return {}


# --------------------------------------------------------------------------- models
def toy_models(root: str, device: str, train_steps: int = 150) -> dict:
    """A strong Llama (4 x 256) and two guides (2 x 64) sharing its toy tokenizer, trained briefly so that they
    write word-like text as real models do."""
    paths = build_strong_and_guides(root, 256, 4, init_std=0.05)
    for (name, path), steps in zip(paths.items(), (train_steps, 2 * train_steps // 3, train_steps // 3)):
        if steps:
            train_causal_lm(path, steps, seed=len(name), device=device)
    models = {k: load_causal_lm(v, dtype="float32", device=device, name=k) for k, v in paths.items()}
    models["prompts"] = [line for line in CORPUS if len(line) > 20]
    models["what"] = "tiny models (devtools.toy): strong Llama 4 x 256, guides 2 x 64, one toy tokenizer"
    return models


def real_models(name: str, device: str) -> dict:
    """Strong model ``name`` (w2s_eval.world.strong); the imdb-mini world's guides and prompts when the world is
    built, else guides of the world's shape (random weights, SmolLM2 tokenizer: same cost, meaningless scores)."""
    from transformers import AutoTokenizer

    from w2s_eval.assets import cache_home
    from w2s_eval.world.data import read_jsonl
    from w2s_eval.world.strong import resolve_strong_model
    from w2s_eval.world.train import GuideShape, init_guide

    models = {"strong": load_causal_lm(str(resolve_strong_model(name)), dtype="float32", device=device, name="strong")}
    world = cache_home() / "worlds" / "imdb-mini"
    manifest = json.loads((world / "manifest.json").read_text()) if (world / "manifest.json").exists() else {}
    if manifest.get("complete"):
        for g in ("tuned", "untuned"):
            models[g] = load_causal_lm(str(world / g), dtype="float32", device=device, name=g)
        guides = "the imdb-mini world's tuned/untuned guides"
    else:
        tok = AutoTokenizer.from_pretrained(resolve_strong_model("smollm2-135m"))
        for seed, g in enumerate(("tuned", "untuned")):
            models[g] = CausalLM(init_guide(tok, None, GuideShape(), seed).to(device).eval(), tok, g)
        guides = (
            "guides of the imdb-mini shape (Llama 4 x 256, SmolLM2 tokenizer) with random weights (world not built)"
        )
    prompts = world / "data" / "prompts.jsonl"
    models["prompts"] = (
        [p["text"] for p in read_jsonl(prompts)]
        if prompts.exists()
        else [f"Here is a movie review from imdb: {line}" for line in CORPUS if len(line) > 20]
    )
    models["what"] = f"strong {name}; {guides}"
    return models


def params(lm: CausalLM) -> int:
    return sum(p.numel() for p in lm.model.parameters())


def _add_counts(out: dict, counts: dict, scale: float = 1.0) -> None:
    """Add a run's counts into ``out``: strong and guide token positions, rounds (times ``scale``), and
    ``gflop`` and ``positions`` {model: GFLOP, token positions (prefill included)} from its ``compute`` {model:
    Cost or its dict}."""
    for key in ("strong", "guide"):
        out[key] += counts[key]
    out["rounds"] += counts["rounds"] * scale
    for name, cost in counts["compute"].items():
        cost = cost if isinstance(cost, Cost) else Cost(**cost)
        out["gflop"][name] = out["gflop"].get(name, 0.0) + cost.flops / 1e9
        out["positions"][name] = out["positions"].get(name, 0) + cost.tokens


def _new_counts() -> dict:
    return {"strong": 0, "guide": 0, "rounds": 0, "gflop": {}, "positions": {}}


# --------------------------------------------------------------------------- paths and report
def make_paths(m: dict, cfg: SamplingConfig, W: int, K: int, L: int, batch: int) -> dict:
    """name -> run(prompts) -> {strong, guide, rounds, gflop: {model: GFLOP}} summed over the prompts."""
    policy, guides = TransformersPolicy(m["strong"]), [m["tuned"], m["untuned"]]

    def engine(search, scored=True, copies=1):
        def run(prompts):
            out = _new_counts()
            for i in range(0, len(prompts), batch):
                ps = [p for p in prompts[i : i + batch] for _ in range(copies)]
                seeds = [prompt_seed(cfg.seed + j % copies, p) for j, p in enumerate(ps)]
                scorer = ImplicitValueScorer(GuideLM(m["tuned"]), GuideLM(m["untuned"])) if scored else None
                for r in chunk_beam_search(ps, policy, scorer, search, cfg, seeds=seeds):
                    counts = {
                        "strong": r.stats["strong_tokens"],
                        "guide": r.stats["guide_tokens"],
                        "rounds": r.stats["rounds"],
                        "compute": r.stats["compute"],
                    }
                    _add_counts(out, counts, 1 / copies)
            return out

        return run

    def seed_path(prompts):
        out = _new_counts()
        for p in prompts:
            _, counts = seed_cbs(
                policy.encode(p, cfg), p, m["strong"], guides, W, K, L, cfg, prompt_seed(cfg.seed, p) % (2**31)
            )
            _add_counts(out, counts)
        return out

    return {
        "seed path": seed_path,
        f"w2s CBS({W},{K},{L})": engine(SearchConfig(W, K, L)),
        f"w2s BoN({W * K})": engine(SearchConfig(1, W * K, None)),
        f"sample {W * K}": engine(SearchConfig(1, 1, None), scored=False, copies=W * K),
    }


def measure(paths: dict, prompts: list, seed_prompts: int, repeats: int, timers: Timers, device) -> dict:
    """Alternating repeats of every path; per path: seconds per prompt of each repeat, counts, timer splits."""
    out = {name: {"s_per_prompt": [], "parts": []} for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            ps = prompts[:seed_prompts] if name == "seed path" else prompts
            timers.take()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            counts = run(ps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            out[name]["s_per_prompt"].append(wall / len(ps))
            out[name]["parts"].append({k: v / len(ps) for k, v in timers.take().items()})
            per_prompt = {k: v / len(ps) for k, v in counts.items() if k not in ("gflop", "positions")}
            for key in ("gflop", "positions"):
                per_prompt[key] = {k: v / len(ps) for k, v in counts[key].items()}
            out[name].update(prompts=len(ps), per_prompt=per_prompt)
    return out


def gflop(r: dict, strong: str = "strong") -> tuple:
    """(GFLOP per prompt of every model, of the guides) of one path's results."""
    per_model = r["per_prompt"]["gflop"]
    return sum(per_model.values()), sum(v for k, v in per_model.items() if k != strong)


def legacy_gflop(per_prompt: dict, params: dict) -> float:
    """GFLOP per prompt of a JSON written before per-model counts: 2 x parameters x token positions, the guides'
    summed tokens on ONE guide's parameters (the two guides are of one size and read the same tokens; the old count
    put them on both guides' parameters, twice the work); no attention term (the JSON holds no positions)."""
    return 2 * (per_prompt["strong"] * params["strong"] + per_prompt["guide"] * params["guides"] / 2) / 1e9


def recompute(doc: dict) -> str:
    """The FLOP columns of a JSON written before per-model counts, restated with :func:`legacy_gflop`."""
    res, params = doc["results"], doc["params"]
    seed = legacy_gflop(res["seed path"]["per_prompt"], params)
    s_min = min(res["seed path"]["s_per_prompt"])
    lines = [
        "| path | GFLOP/prompt | FLOP ratio seed/path | speed-up (min) | speed-up / FLOP ratio |",
        "|---|---|---|---|---|",
    ]
    for name, r in res.items():
        g = legacy_gflop(r["per_prompt"], params)
        speed = s_min / min(r["s_per_prompt"])
        lines.append(f"| {name} | {g:.1f} | {seed / g:.2f} | {speed:.2f}x | {speed / (seed / g):.2f} |")
    return "\n".join(lines)


def report(res: dict) -> str:
    """Markdown tables: times and ratios to the seed path beside the FLOP ratio; time per round by part."""
    seed = res["seed path"]
    s_min, s_med = min(seed["s_per_prompt"]), statistics.median(seed["s_per_prompt"])
    lines = [
        "| path | prompts | s/prompt min | s/prompt median | speed-up vs seed path (min / median) | "
        "GFLOP/prompt (guides) | FLOP ratio seed/path | speed-up / FLOP ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        t_min, t_med = min(r["s_per_prompt"]), statistics.median(r["s_per_prompt"])
        total, guides = gflop(r)
        fr = gflop(seed)[0] / total
        lines.append(
            f"| {name} | {r['prompts']} | {t_min:.3f} | {t_med:.3f} | {s_min / t_min:.2f}x / "
            f"{s_med / t_med:.2f}x | {total:.1f} ({guides:.1f}) | {fr:.2f} | {s_min / t_min / fr:.2f} |"
        )
    names = list(res)
    cbs, bon, smp = (res[n]["s_per_prompt"] for n in names[1:4])
    lines += ["", "| ratio (wall time, same prompts) | min / min | median / median |", "|---|---|---|"]
    for label, a, b in (
        (f"{names[1]} / {names[2]}", cbs, bon),
        (f"{names[1]} / {names[3]}", cbs, smp),
        (f"{names[2]} / {names[3]}", bon, smp),
    ):
        lines.append(f"| {label} | {min(a) / min(b):.3f}x | {statistics.median(a) / statistics.median(b):.3f}x |")
    lines += [
        "",
        "| path | rounds/prompt | ms per round: strong forward | guide forward | cache reorder | "
        "tokenize/decode | rest (Python, sampling) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        best = min(range(len(r["s_per_prompt"])), key=r["s_per_prompt"].__getitem__)
        parts, rounds = r["parts"][best], max(r["per_prompt"].get("rounds", 1), 1)
        rest = r["s_per_prompt"][best] - sum(parts.get(p, 0.0) for p in PARTS)
        cells = " | ".join(f"{1e3 * parts.get(p, 0.0) / rounds:.1f}" for p in PARTS)
        lines.append(f"| {name} | {rounds:g} | {cells} | {1e3 * rest / rounds:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--strong", help="a strong model of w2s_eval.world.strong (e.g. smollm2-135m); default: tiny models"
    )
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument(
        "--seed-prompts",
        type=int,
        default=None,
        help="time the seed path (one prompt at a time, so "
        "per-prompt figures are exact) on the first N prompts only (default: all)",
    )
    ap.add_argument("--new-tokens", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=None, help="prompts per engine call (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train-steps", type=int, default=150, help="tiny models: train this long first (0: random)")
    ap.add_argument("--naive-prompts", type=int, default=0, help="also time the 'no KV cache' path on N prompts")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument(
        "--recompute",
        metavar="FILE",
        help="only restate the FLOP columns of a JSON written before "
        "per-model counts (see legacy_gflop) and print them",
    )
    args = ap.parse_args(argv)
    if args.recompute:
        print(recompute(json.loads(Path(args.recompute).read_text())))
        return 0

    from w2s_eval.engine import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        m = real_models(args.strong, str(device)) if args.strong else toy_models(root, str(device), args.train_steps)
    prompts = m["prompts"][: args.prompts]
    cfg = SamplingConfig(temperature=0.7, top_k=50, max_new_tokens=args.new_tokens, seed=0)
    W, K, L = 4, 4, 5
    paths = make_paths(m, cfg, W, K, L, args.batch_size or len(prompts))
    with Timers(m["strong"], [m["tuned"], m["untuned"]], device) as timers:
        for name, run in paths.items():  # warm-up
            run(prompts[:1])
        res = measure(paths, prompts, args.seed_prompts or len(prompts), args.repeats, timers, device)
    n_strong, n_guides = params(m["strong"]), params(m["tuned"]) + params(m["untuned"])
    if args.naive_prompts:
        scorer = ImplicitValueScorer(GuideLM(m["tuned"], incremental=False), GuideLM(m["untuned"], incremental=False))
        t0 = time.perf_counter()
        for p in prompts[: args.naive_prompts]:
            naive_cbs(p, m["strong"], scorer, W, K, L, cfg)
        naive = (time.perf_counter() - t0) / args.naive_prompts
    env = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    table = report(res)
    print(
        f"\nw2s-eval search benchmark: {m['what']}; {len(prompts)} prompts, {args.new_tokens} new tokens, "
        f"T {cfg.temperature}, top-k {cfg.top_k}, {args.repeats} alternating repeats; {env}; params: strong "
        f"{n_strong / 1e6:.1f}M, guides {n_guides / 1e6:.1f}M together\n\n{table}"
    )
    if args.naive_prompts:
        print(
            f"\n'no KV cache' path (HF generate re-encoding each prefix; weaker than the seed's code): "
            f"{naive:.3f} s/prompt on {args.naive_prompts} prompts"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "env": env,
                    "models": m["what"],
                    "args": vars(args),
                    "params": {"strong": n_strong, "guides": n_guides},
                    "results": res,
                    "table": table,
                    "no_kv_cache_s_per_prompt": naive if args.naive_prompts else None,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
