"""Run every method on the same prompts and seeds of a world; one record per (prompt, method, seed).

Methods run one after the other, in the order given: each on every batch of prompts
and every seed before the next starts, so a method's results are complete (and can be
reported, see ``on_method_done``) while the later ones still run. Each record is
written (and flushed) as soon as its batch is scored; a rerun skips recorded keys.
Every (prompt batch, seed) call is seeded by itself, so the order changes no result.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Union

from tqdm.auto import tqdm

from ..config import method_to_dict
from ..eft import vocab_mismatch
from ..engine import build_engine
from ..guide import score_candidates
from ..lm import user_turn
from ..provenance import atomic_write_json, fingerprint, git_revision, package_versions, run_dir_lock, utc_now
from ..sharding import Shard, file_lock
from ..world_registry import World
from .merge import records_view
from .oracle import oracle_engine, rewards
from .records import (
    SHAPES_FILE,
    RecordLog,
    RunConfig,
    check_run_dir,
    open_run_dir,
)

__all__ = ["run_compare", "CompareOutcome", "vocabulary_mismatch", "strong_prompts"]

logger = logging.getLogger(__name__)


@dataclass
class CompareOutcome:
    run_dir: Path
    n_before: int  # records already there
    n_new: int  # records written by this run
    n_planned: int  # records of the requested grid
    truncated: bool  # a truncated last line was found (and will have been recomputed)
    not_applicable: dict = field(default_factory=dict)  # {method: why it was not run}


def _guide_scores(engine, results, guide_prompts) -> tuple:
    """(scores, source, tokens): the search's best-beam score, or, where the method scored nothing
    (base, EFT, BoN(1)), the engine's guide on the final response (its token forwards
    are measurement, not the method's compute)."""

    missing = [i for i, r in enumerate(results) if r.score is None]
    scores = [r.score for r in results]
    sources = ["search" if r.score is not None else "rescored" for r in results]
    tokens = [0] * len(results)
    if missing and engine.scorer is not None:
        getattr(engine.scorer, "reset", lambda: None)()  # its cost is this call's own (see chunk_beam_search)
        vals, toks = score_candidates(
            engine.scorer,
            [guide_prompts[i] for i in missing],
            [results[i].text for i in missing],
            [results[i].beams[0].ended for i in missing],
        )
        for i, v, t in zip(missing, vals, toks):
            scores[i], tokens[i] = float(v), int(t)
    return scores, sources, tokens


def vocabulary_mismatch(engine) -> Optional[str]:
    """Why EFT cannot run on ``engine`` because its strong model's vocabulary is not the guides' (naming both
    tokenizers), or None. Engines without a local strong model or without guides give None."""
    strong = getattr(engine.policy, "lm", None)
    guides = [*engine.tuned, *([engine.untuned] if engine.untuned is not None else [])]
    return vocab_mismatch(strong, guides) if strong is not None and guides else None


def strong_prompts(engine, cfg: RunConfig, texts) -> list:
    """What the strong model reads of each prompt: the text itself, or with ``cfg.chat_template`` the text as a
    user turn of the strong tokenizer's chat template, with the generation prompt (the guides read the text)."""
    if not cfg.chat_template:
        return list(texts)
    lm = getattr(engine.policy, "lm", None)
    tok = getattr(lm, "tokenizer", None)
    if not getattr(tok, "chat_template", None):
        what = (
            "a served strong model"
            if lm is None
            else f"the strong model {getattr(tok, 'name_or_path', None) or lm.name!r} (a base model?)"
        )
        raise ValueError(
            f"--chat-template: {what} has no chat template here; leave out --chat-template to give it the plain prompt"
        )

    return [user_turn(tok, t) for t in texts]


def _check_context(engine, cfg: RunConfig, prompts) -> None:
    """Every prompt (``(id, text, what the strong model reads)``) plus ``max_new_tokens`` must fit the local
    strong model's context (before anything is written; :func:`w2s_eval.config.context_error`)."""
    fit_error = getattr(engine.policy, "fit_error", None)  # a served strong model: its server checks
    if fit_error is None or cfg.sampling.truncation == "left":
        return
    for pid, _, text in prompts:
        error = fit_error(text, cfg.sampling.max_new_tokens, "--max-new-tokens")
        if error is not None:
            raise ValueError(f"world {cfg.world!r}, prompt {pid}: {error}")


def _prepare(engine, cfg: RunConfig, methods) -> tuple:
    """({spec: PreparedMethod}, {spec: why not}) : each method parsed and checked once, before any generation."""
    prepared, not_applicable = {}, {}
    mismatch = vocabulary_mismatch(engine) if any(m.name == "eft" for m in methods) else None
    for m in methods:
        if m.name == "eft" and mismatch is not None:
            not_applicable[m.spec] = mismatch
            logger.info("%s is not run: %s", m.spec, mismatch)
            continue
        try:
            prepared[m.spec] = engine.prepare(m)
        except ValueError as e:
            raise ValueError(f"{e} (drop {m.spec} from --methods)") from None
    if not prepared:
        raise ValueError(
            f"no method of {', '.join(cfg.methods)} can run here: "
            + "; ".join(f"{k}: {v}" for k, v in not_applicable.items())
        )
    return prepared, not_applicable


def _ready(engine, cfg: RunConfig, methods, prompts, world: World) -> tuple:
    """(engine, {spec: PreparedMethod}, {spec: why not}, prompts as ``(id, text, what the strong model reads)``):
    the engine built (unless given; with ``cfg.guide == "gold"``, guided by ``world``'s gold reward), every
    method prepared, the prompts rendered once, the context checked; nothing is written."""
    if engine is None:
        engine = build_engine(cfg.engine)
        if cfg.guide == "gold":
            engine = oracle_engine(engine, world)
    prepared, not_applicable = _prepare(engine, cfg, methods)
    strong = strong_prompts(engine, cfg, [t for _, t in prompts])  # fails here if there is no chat template
    rendered = [(pid, text, s) for (pid, text), s in zip(prompts, strong)]
    _check_context(engine, cfg, rendered)
    return engine, prepared, not_applicable, rendered


def _todo(log_keys, prompts, methods, seeds) -> int:
    return sum(1 for pid, _ in prompts for m in methods for s in seeds if (pid, m.spec, s) not in log_keys)


def run_compare(
    world: World,
    cfg: RunConfig,
    out_dir: Union[str, os.PathLike],
    engine=None,
    progress: bool = True,
    on_method_done: Optional[Callable] = None,
    shard: Optional[Shard] = None,
) -> CompareOutcome:
    """Run ``cfg`` on ``world`` into ``out_dir`` (resuming what is recorded there); returns counts.

    ``engine`` (optional) is an Engine built from ``cfg.engine`` (default: built here). Everything that bad
    settings can break (another run's directory, the models, the methods, the context) is checked before
    ``config.json`` is written, so a failed run never blocks the corrected rerun into the same directory.
    EFT with a strong model of another vocabulary is not run (the report shows n/a); the other methods run.
    KeyboardInterrupt propagates; what was recorded stays on disk.
    ``on_method_done(run_dir, spec, done, total)`` (optional) is called after each method to run has all its
    records on disk: ``done`` of the ``total`` methods to run are then complete (e.g. to report them early).
    One process writes a run directory at a time (:func:`~w2s_eval.provenance.run_dir_lock`): a second one is
    refused with :class:`~w2s_eval.provenance.RunDirBusy`.
    ``shard``: compute only that shard's prompt batches, into its own records file (:mod:`w2s_eval.sharding`;
    :func:`~w2s_eval.harness.merge.merge_shards` assembles them). Without it, finished shards are merged first.
    """
    if cfg.world != world.name or cfg.world_fingerprint != fingerprint(world.manifest):
        raise ValueError(
            f"the run config is for world {cfg.world!r} ({cfg.world_fingerprint}), not for "
            f"{world.name!r} ({fingerprint(world.manifest)}); make it with make_run_config(world, ...)"
        )
    if shard is not None:  # a shard writes its own records file, under that file's lock; shards run side by side
        return _run_compare(world, cfg, out_dir, engine, progress, on_method_done, shard)
    with run_dir_lock(out_dir, "--out"):
        return _run_compare(world, cfg, out_dir, engine, progress, on_method_done, shard)


def _run_compare(
    world: World, cfg: RunConfig, out_dir, engine, progress: bool, on_method_done, shard: Optional[Shard]
) -> CompareOutcome:
    """:func:`run_compare` with the run directory's lock held (a shard: its records file's)."""
    methods = list(cfg.parsed_methods)
    out, _, _, known = check_run_dir(out_dir, cfg)  # writes nothing
    index = {pid: i for i, (pid, _) in enumerate(world.prompts[: cfg.n_prompts])}  # each record names its place
    prompts, name, main_keys, recorded = records_view(out, world.prompts[: cfg.n_prompts], cfg.batch_size, shard)
    n_planned = len(prompts) * len(methods) * len(cfg.seeds)
    not_applicable, prepared, rendered = dict(known), None, None  # known: found by an earlier run of this identity
    if _todo(recorded, prompts, [m for m in methods if m.spec not in known], cfg.seeds):
        engine, prepared, found, rendered = _ready(engine, cfg, methods, prompts, world)
        not_applicable.update(found)
    run_dir = open_run_dir(out, cfg, not_applicable)
    what = f"the records of {run_dir}" if shard is None else f"shard {shard} of {run_dir}"
    with file_lock(run_dir / name, what):
        log = RecordLog(run_dir, name, main_keys if shard is not None else ())
        state = (engine, prepared, rendered, index, not_applicable, n_planned)
        return _compute(world, cfg, run_dir, log, state, progress, on_method_done)


def _compute(
    world: World,
    cfg: RunConfig,
    run_dir: Path,
    log: RecordLog,
    state: tuple,
    progress: bool,
    on_method_done: Optional[Callable],
) -> CompareOutcome:
    """The records of ``cfg`` not in ``log`` yet; ``state``: see :func:`run_compare`."""
    engine, prepared, rendered, index, not_applicable, n_planned = state
    prompts = [(pid, text) for pid, text, _ in rendered] if rendered else []
    n_before = len(log.records)
    runnable = [m for m in cfg.parsed_methods if m.spec not in not_applicable]
    todo_total = _todo(log.keys, prompts, runnable, cfg.seeds)
    logger.info(
        "%s: %d of %d records to compute (%d already recorded)", run_dir, todo_total, n_planned, n_planned - todo_total
    )
    if todo_total == 0:
        return CompareOutcome(run_dir, n_before, 0, n_planned, log.truncated is not None, not_applicable)
    if callable(getattr(engine, "model_shapes", None)):
        atomic_write_json(run_dir / SHAPES_FILE, engine.model_shapes())
    bar = tqdm(total=todo_total, desc=f"compare {world.name}", unit="rec", disable=not progress)
    try:
        n_new, stamp = 0, (package_versions(), git_revision(), _served(engine), index)
        for done, m in enumerate(runnable, 1):
            n_new += _run_method(world, cfg, engine, prepared[m.spec], rendered, log, bar, stamp)
            logger.info("%s: %s has all its records (%d of %d methods)", run_dir, m.spec, done, len(runnable))
            if on_method_done is not None:
                on_method_done(run_dir, m.spec, done, len(runnable))
    finally:
        bar.close()
    return CompareOutcome(run_dir, n_before, n_new, n_planned, log.truncated is not None, not_applicable)


def _run_method(world: World, cfg: RunConfig, engine, run, prompts, log: RecordLog, bar, stamp: tuple) -> int:
    """Every (prompt batch, seed) of method ``run`` not in ``log`` yet: generate, score, record. Returns records
    written. ``prompts``: ``(id, text, what the strong model reads)``; ``stamp``: (package versions, git revision,
    how the strong model is served, {prompt id: its place in the world's prompts}) of every record."""
    versions, revision, served, index = stamp
    n_new = 0
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]
        for seed in cfg.seeds:
            todo = [p for p in batch if (p[0], run.spec, seed) not in log]
            if not todo:
                continue
            bar.set_postfix_str(f"{run.spec} seed={seed}")
            texts = [t for _, t, _ in todo]
            results = engine.generate(
                [s for _, _, s in todo],
                run,
                replace(cfg.sampling, seed=seed),
                batch_size=len(texts),
                guide_prompts=texts,
            )
            responses = [r.text for r in results]
            gold = rewards(world.gold, "gold", texts, responses)
            judge = rewards(world.judge, "judge", texts, responses)
            guide, sources, score_tokens = _guide_scores(engine, results, texts)
            for (pid, text, _), r, g, j, gs, src, st in zip(todo, results, gold, judge, guide, sources, score_tokens):
                rec = {
                    **_record(cfg, run.method, seed, pid, text, r, g, j, gs, src, st, versions, revision),
                    "prompt_index": index[pid],
                }
                log.append({**rec, "strong_engine": served} if served else rec)
                n_new += 1
                bar.update(1)
    return n_new


def _served(engine) -> Optional[dict]:
    """How the strong model was served (endpoint, model, client settings), for endpoint runs; else None."""
    describe = getattr(engine.policy, "describe", None)
    return describe() if callable(describe) else None


def _record(
    cfg: RunConfig,
    method,
    seed: int,
    pid: str,
    text: str,
    r,
    gold: float,
    judge: float,
    guide_score: Optional[float],
    source: str,
    score_tokens: int,
    versions: dict,
    revision,
) -> dict:
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
        "compute": stats.get("compute"),  # {model role: tokens and FLOPs, prefill and forward} (w2s_eval.flops)
        "flops": stats.get("flops"),  # all models together: the method's compute (re-scoring for guide_score aside)
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
