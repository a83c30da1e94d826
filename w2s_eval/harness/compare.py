"""Run every method on the same prompts and seeds of a world; one record per (prompt, method, seed).

Prompts are processed in batches; for each batch, every seed and every method runs
on the batch, so an interrupted run leaves a balanced set of records. Each record
is written (and flushed) as soon as its batch is scored; a rerun skips recorded keys.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

from tqdm.auto import tqdm

from ..config import method_to_dict, parse_method
from .records import RecordLog, RunConfig, fingerprint, git_revision, open_run_dir, package_versions, utc_now
from .world import World

__all__ = ["split_methods", "parse_seeds", "make_run_config", "build_world_engine", "run_compare", "CompareOutcome",
           "served_model_name"]

logger = logging.getLogger(__name__)


def split_methods(specs: Union[str, Sequence[str]]) -> list:
    """Split ``"base,bon:n=16,cbs:w=4,k=4,l=5"`` (commas inside a method's parameters allowed) into specs.

    A comma-separated item with a ``:`` or without ``=`` starts a new method; ``key=value``
    items attach to the method before. Also accepts a list of such strings. Each spec is
    validated and returned in canonical form (``parse_method(spec).spec``).
    """
    texts = [specs] if isinstance(specs, str) else list(specs)
    out: list = []
    for text in texts:
        current: Optional[str] = None
        for item in (p.strip() for p in re.split(r"[,;\s]+", text.strip())):
            if not item:
                continue
            if ":" in item or "=" not in item:
                if current is not None:
                    out.append(current)
                current = item
            elif current is None:
                raise ValueError(f"method parameter {item!r} comes before any method name; write e.g. 'bon:n=16'")
            else:
                current += "," + item
        if current is not None:
            out.append(current)
    if not out:
        raise ValueError("no methods given; e.g. --methods base,bon:n=16,eft:beta=1.0,cbs:w=4,k=4,l=5")
    canonical = [parse_method(s).spec for s in out]
    dupes = sorted({s for s in canonical if canonical.count(s) > 1})
    if dupes:
        raise ValueError(f"method(s) listed twice: {', '.join(dupes)}")
    return canonical


def parse_seeds(text: Union[str, int, Sequence[int]]) -> tuple:
    """``3`` -> (0, 1, 2); ``"0,5,7"`` -> (0, 5, 7); a list of ints is kept."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        return tuple(int(s) for s in text)
    text = text.strip()
    try:
        if "," in text:
            return tuple(int(s) for s in text.split(",") if s.strip())
        n = int(text)
    except ValueError:
        raise ValueError(f"seeds must be a count (e.g. 3 -> seeds 0,1,2) or a list like 0,5,7; got {text!r}") from None
    if n < 1:
        raise ValueError(f"the number of seeds must be >= 1, got {n}")
    return tuple(range(n))


def served_model_name(strong_endpoint: str) -> str:
    """The name of the one model an OpenAI-compatible server serves (ValueError when it serves several)."""
    from ..endpoint import EndpointPolicy

    policy = EndpointPolicy(strong_endpoint)
    try:
        return policy.model
    finally:
        policy.close()


def make_run_config(world: World, methods, n_prompts: Optional[int] = None, seeds=1, *, guide: str = "implicit",
                    guide_beta: float = 1.0, dtype: str = "float32", device: str = "auto", batch_size: int = 8,
                    strong_endpoint: Optional[str] = None, strong_model: Optional[str] = None,
                    **sampling_overrides) -> RunConfig:
    """Resolve a :class:`RunConfig` for ``world``: its sampling with ``sampling_overrides`` applied.

    ``strong_endpoint`` (with ``strong_model``; None: the server's only model, asked here so the
    config records its name) replaces the world's strong model for sampling.
    """
    n_available = len(world.prompts)
    n_prompts = n_available if n_prompts is None else n_prompts
    if isinstance(n_prompts, int) and n_prompts > n_available:
        raise ValueError(f"--prompts {n_prompts} is more than the {n_available} evaluation prompts of world "
                         f"{world.name!r}; use --prompts {n_available} or fewer")
    overrides = {k: v for k, v in sampling_overrides.items() if v is not None}
    try:
        sampling = replace(world.sampling, **overrides)
    except TypeError as e:
        raise ValueError(f"unknown sampling setting ({e}); valid: temperature, top_k, top_p, max_new_tokens, stop, "
                         "truncation") from None
    if guide == "rm" and world.reward_model is None:
        raise ValueError(f"world {world.name!r} has no reward model; use --guide implicit")
    cfg = RunConfig(world=world.name, world_fingerprint=fingerprint(world.manifest),
                    methods=tuple(split_methods(methods)),
                    n_prompts=n_prompts, seeds=parse_seeds(seeds), sampling=sampling, guide=guide,
                    guide_beta=guide_beta, dtype=dtype, device=device, batch_size=batch_size,
                    strong_endpoint=strong_endpoint, strong_model=strong_model)
    if cfg.strong_endpoint is not None and cfg.strong_model is None:
        cfg = replace(cfg, strong_model=served_model_name(cfg.strong_endpoint))
    return cfg


def build_world_engine(world: World, guide: str = "implicit", guide_beta: float = 1.0, dtype: str = "float32",
                       device: str = "auto", strong_endpoint: Optional[str] = None, strong_model: Optional[str] = None):
    """An Engine for a world: its strong model (or the one served at ``strong_endpoint``), the
    tuned/untuned guides (EFT and the implicit value), and as guide scorer the implicit value
    (``guide="implicit"``) or the world's reward model (``"rm"``)."""
    from ..engine import build_engine

    strong = {"strong_endpoint": strong_endpoint, "strong_model": strong_model} if strong_endpoint else {
        "strong": world.strong}
    engine = build_engine(**strong, tuned=world.tuned, untuned=world.untuned, beta=guide_beta, dtype=dtype,
                          device=device)
    if guide == "rm":
        if world.reward_model is None:
            raise ValueError(f"world {world.name!r} has no reward model; use --guide implicit")
        from ..models import load_classifier
        from ..scorers import RewardModelScorer

        model, tok = load_classifier(world.reward_model, dtype=dtype, device=device)
        engine.scorer = RewardModelScorer(model, tok, name="reward_model")
    return engine


def _engine_for(world: World, cfg: RunConfig):
    return build_world_engine(world, cfg.guide, cfg.guide_beta, cfg.dtype, cfg.device, cfg.strong_endpoint,
                              cfg.strong_model)


@dataclass
class CompareOutcome:
    run_dir: Path
    n_before: int  # records already there
    n_new: int  # records written by this run
    n_planned: int  # records of the requested grid
    truncated: bool  # a truncated last line was found (and will have been recomputed)


def _rewards(fn, name: str, prompts: list, responses: list) -> list:
    values = list(fn(prompts, responses))
    if len(values) != len(responses):
        raise ValueError(f"the world's {name} function returned {len(values)} values for {len(responses)} responses")
    out = []
    for v in values:
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"the world's {name} function returned {v} (not finite)")
        out.append(v)
    return out


def _guide_scores(engine, results) -> tuple:
    """(scores, source, tokens): the search's best-beam score, or, where the method scored nothing
    (base, EFT, BoN(1)), the engine's guide scorer on the final response (its token forwards
    are measurement, not the method's compute)."""
    from ..search import score_candidates

    missing = [i for i, r in enumerate(results) if r.score is None]
    scores = [r.score for r in results]
    sources = ["search" if r.score is not None else "rescored" for r in results]
    tokens = [0] * len(results)
    if missing and engine.scorer is not None:
        vals, toks = score_candidates(engine.scorer, [results[i].prompt for i in missing],
                                      [results[i].text for i in missing], [results[i].beams[0].ended for i in missing])
        for i, v, t in zip(missing, vals, toks):
            scores[i], tokens[i] = float(v), int(t)
    return scores, sources, tokens


def run_compare(world: World, cfg: RunConfig, out_dir: Union[str, os.PathLike], engine=None,
                progress: bool = True) -> CompareOutcome:
    """Run ``cfg`` on ``world`` into ``out_dir`` (resuming what is recorded there); returns counts.

    ``engine`` (optional) is an Engine built for this world (default: :func:`build_world_engine`).
    With an endpoint (``cfg.strong_endpoint``) the methods are checked (EFT is refused there)
    before the run directory is touched.
    KeyboardInterrupt propagates; what was recorded stays on disk.
    """
    if cfg.world != world.name or cfg.world_fingerprint != fingerprint(world.manifest):
        raise ValueError(f"the run config is for world {cfg.world!r} ({cfg.world_fingerprint}), not for "
                         f"{world.name!r} ({fingerprint(world.manifest)}); make it with make_run_config(world, ...)")
    methods = [parse_method(m) for m in cfg.methods]
    if cfg.strong_endpoint is not None:  # refuse what cannot run (EFT) before the run directory is touched
        engine = engine if engine is not None else _engine_for(world, cfg)  # only the guides load here
        for m in methods:
            try:
                engine.check(m)
            except ValueError as e:
                raise ValueError(f"{e} (drop {m.spec} from --methods)") from None
    run_dir = open_run_dir(out_dir, cfg)
    log = RecordLog(run_dir)
    n_before = len(log.records)
    prompts = world.prompts[: cfg.n_prompts]
    todo_total = sum(1 for pid, _ in prompts for m in methods for s in cfg.seeds if (pid, m.spec, s) not in log)
    n_planned = len(prompts) * len(methods) * len(cfg.seeds)
    logger.info("%s: %d of %d records to compute (%d already recorded)", run_dir, todo_total, n_planned,
                n_planned - todo_total)
    if todo_total == 0:
        return CompareOutcome(run_dir, n_before, 0, n_planned, log.truncated is not None)
    if engine is None:
        engine = _engine_for(world, cfg)
    for m in methods:
        engine.check(m)  # fail before any generation
    versions, revision = package_versions(), git_revision()
    bar = tqdm(total=todo_total, desc=f"compare {world.name}", unit="rec", disable=not progress)
    n_new = 0
    try:
        for start in range(0, len(prompts), cfg.batch_size):
            batch = prompts[start : start + cfg.batch_size]
            for seed in cfg.seeds:
                sampling = replace(cfg.sampling, seed=seed)
                for method in methods:
                    todo = [(pid, text) for pid, text in batch if (pid, method.spec, seed) not in log]
                    if not todo:
                        continue
                    bar.set_postfix_str(f"{method.spec} seed={seed}")
                    texts = [t for _, t in todo]
                    results = engine.generate(texts, method, sampling, batch_size=len(texts))
                    responses = [r.text for r in results]
                    gold = _rewards(world.gold, "gold", texts, responses)
                    judge = _rewards(world.judge, "judge", texts, responses)
                    guide, sources, score_tokens = _guide_scores(engine, results)
                    rows = zip(todo, results, gold, judge, guide, sources, score_tokens)
                    served = _served(engine)
                    for (pid, text), r, g, j, gs, src, st in rows:
                        rec = _record(cfg, method, seed, pid, text, r, g, j, gs, src, st, versions, revision)
                        log.append({**rec, "strong_engine": served} if served else rec)
                        n_new += 1
                        bar.update(1)
    finally:
        bar.close()
    return CompareOutcome(run_dir, n_before, n_new, n_planned, log.truncated is not None)


def _served(engine) -> Optional[dict]:
    """How the strong model was served (endpoint, model, client settings), for endpoint runs; else None."""
    describe = getattr(engine.policy, "describe", None)
    return describe() if callable(describe) else None


def _record(cfg: RunConfig, method, seed: int, pid: str, text: str, r, gold: float, judge: float,
            guide_score: Optional[float], source: str, score_tokens: int, versions: dict, revision) -> dict:
    stats = r.stats
    batch = int(stats.get("batch_size", 1)) or 1
    best = r.beams[0] if r.beams else None
    return {
        "prompt_id": pid,
        "prompt": text,
        "response": r.text,
        "method": method.spec,
        "method_config": method_to_dict(method),
        "budget": method.budget,
        "seed": seed,
        "prompt_seed": stats.get("seed"),
        "config": cfg.resolved(method.spec, seed),
        "config_hash": cfg.config_hash,
        "gold": gold,
        "judge": judge,
        "guide_score": guide_score,
        "guide_score_source": source,
        "guide_score_tokens": score_tokens,
        "strong_tokens": int(stats.get("strong_tokens", 0)),
        "guide_tokens": int(stats.get("guide_tokens", 0)),
        "rounds": int(stats.get("rounds", 0)),
        "samples": int(stats.get("samples", 0)),
        "response_tokens": best.n_tokens if best else None,
        "ended": best.ended if best else None,
        "wall_time_s": float(stats.get("wall_time_s", 0.0)) / batch,
        "batch_wall_time_s": float(stats.get("wall_time_s", 0.0)),
        "batch_size": batch,
        "versions": versions,
        "git_revision": revision,
        "time": utc_now(),
    }
