"""``w2s-eval alpaca-eval generate``: AlpacaEval model outputs from any w2s method, resumable.

The output directory holds:

- ``model_outputs.json``: AlpacaEval's format (``instruction``, ``output``, ``generator``,
  ``dataset``), in instruction-file order, rewritten atomically after every batch;
- ``search_stats.json``: one record per instruction (tokens, scores, rounds, wall time,
  seed, device, config fingerprint, package versions);
- ``run_config.json``: the run's identity (the resolved generation config, an EngineSpec with
  the method and sampling, without the device placement; and the instruction set's hash),
  the placement, the package versions; strict JSON;
- ``configs.yaml`` + ``prompt.txt``: an AlpacaEval ``models_configs`` entry (see
  :func:`w2s_eval.alpaca.decoder.load_model_configs`).

A rerun with the same config continues where the last one stopped; a directory made
with another config is refused, naming the first differing field. Everything that can be
checked (settings, instruction file, --out, the models loading, each prompt fitting the
strong model's context) is checked before the first file is written, so a failed run never
blocks its own --out. Run directories made before the EngineSpec (no ``rm_weight`` in their
identity) are refused naming that field: finish them with the version that made them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

from tqdm.auto import tqdm

from ..assets import ensure_writable_dir
from ..config import check_positive_int
from ..extras import require
from ..provenance import (
    atomic_write_json,
    atomic_write_text,
    check_identity,
    check_writable_dir,
    fingerprint,
    package_versions,
)
from .data import load_instructions, load_rows
from .decoder import (
    AlpacaEngine,
    GenerationConfig,
    build_alpaca_engine,
    model_configs_dict,
    resolve_served_model,
)

logger = logging.getLogger(__name__)

__all__ = ["run_generate", "OUTPUTS_FILE", "STATS_FILE", "RUN_CONFIG_FILE", "MODEL_CONFIGS_FILE"]

OUTPUTS_FILE = "model_outputs.json"
STATS_FILE = "search_stats.json"
RUN_CONFIG_FILE = "run_config.json"
_OUT_FIX = "give a folder you can write to"
MODEL_CONFIGS_FILE = "configs.yaml"


def _identity(cfg: GenerationConfig, rows: list[dict]) -> dict:
    """What decides the outputs: the generation config (placement aside) and the instruction set (before --limit)."""
    return {**cfg.identity(), "generator": cfg.generator, "instructions_sha256": fingerprint(rows)}


def _check_dir(out: Path, identity: dict) -> None:
    """Refuse a directory made with another config (naming the field); never touch finished files."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a directory")
    cfg_path = out / RUN_CONFIG_FILE
    if not cfg_path.exists() and (out / OUTPUTS_FILE).exists():
        raise FileExistsError(f"{out / OUTPUTS_FILE} exists but {cfg_path.name} does not: it was not made by this "
                              "command (or by another version); use a new --out directory")
    check_identity(cfg_path, identity, str(out),
                   fix="Use the same settings to resume, or a new --out directory")
    check_writable_dir(out, "--out", _OUT_FIX)


def _write_model_configs(out: Path, cfg: GenerationConfig, batch_size: int) -> None:
    require("yaml", "alpaca")
    import yaml

    header = ("# AlpacaEval models_configs entry. alpaca_eval 0.6.6 resolves fn_completions by name from a fixed\n"
              "# list; load this file with w2s_eval.alpaca.decoder.load_model_configs(DIR) and pass the result as\n"
              "# alpaca_eval.evaluate_from_model(model_configs=...), which accepts the decoder as a callable.\n"
              "# For a leaderboard submission copy this directory to models_configs/<generator name>/.\n")
    body = yaml.safe_dump(model_configs_dict(cfg, batch_size=batch_size), sort_keys=False, allow_unicode=True)
    atomic_write_text(out / MODEL_CONFIGS_FILE, header + body)
    atomic_write_text(out / "prompt.txt", "{instruction}")  # the decoder applies the chat template


def _load_done(out: Path, order: dict[str, int], generator: str) -> tuple[dict, dict]:
    """Finished rows of an earlier run (outputs and their stats), by instruction."""
    done, stats = {}, {}
    if (out / OUTPUTS_FILE).exists():
        for r in load_rows(out / OUTPUTS_FILE):
            if r.get("instruction") not in order or r.get("generator") != generator:
                raise ValueError(f"{out / OUTPUTS_FILE} holds a row not from this run ({str(r.get('instruction'))[:60]!r}, "
                                 f"generator {r.get('generator')!r}); use a new --out directory")
            done[r["instruction"]] = r
    if (out / STATS_FILE).exists():
        stats = {r["instruction"]: r for r in load_rows(out / STATS_FILE) if r.get("instruction") in done}
    return done, stats


def _ready_engine(cfg: GenerationConfig, engine: Optional[AlpacaEngine], todo: list[dict]) -> AlpacaEngine:
    """The loaded engine for ``cfg``, checked against the instructions still to do."""
    engine = build_alpaca_engine(cfg) if engine is None else engine.for_config(cfg)
    check = getattr(engine, "check_fit", None)
    if check is not None:
        check([r["instruction"] for r in todo])
    return engine


def run_generate(cfg: GenerationConfig, instructions: Union[str, Path], out_dir: Union[str, Path], *,
                 device: Optional[str] = None, batch_size: int = 8, limit: Optional[int] = None,
                 progress: bool = True, engine: Optional[AlpacaEngine] = None) -> Path:
    """Write AlpacaEval model outputs of ``cfg`` for an instruction set into ``out_dir``; its path.

    ``instructions``: a JSON/JSONL file, ``alpaca_eval`` (hub) or ``offline`` (fetched baseline).
    ``device``: instead of ``cfg.device``. ``limit``: only the first N instructions (a later run may
    raise it and continue). ``engine``: an already loaded engine for ``cfg`` (else the models are
    loaded here). Over an endpoint without ``strong_model``, the server is asked for its one model's
    name, which then enters the generator name and the run's identity.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("limit", limit, allow_none=True)
    if device is not None:
        cfg = replace(cfg, device=device)
    all_rows = load_instructions(instructions)
    cfg = resolve_served_model(cfg)
    identity = _identity(cfg, all_rows)
    rows = all_rows[:limit] if limit is not None else all_rows
    out = Path(out_dir)
    _check_dir(out, identity)
    order = {r["instruction"]: i for i, r in enumerate(all_rows)}
    done, stats = _load_done(out, order, cfg.generator)
    todo = [r for r in rows if r["instruction"] not in done]
    if todo:
        engine = _ready_engine(cfg, engine, todo)  # models load and prompts fit before anything is written
    versions, fp = package_versions(), fingerprint(identity)
    ensure_writable_dir(out, "--out", _OUT_FIX)
    atomic_write_json(out / RUN_CONFIG_FILE, {"identity": identity, "fingerprint": fp,
                                              "engine": cfg.engine_spec().to_dict(), "batch_size": batch_size,
                                              "versions": versions}, sort_keys=False)
    _write_model_configs(out, cfg, batch_size)
    if not todo:
        logger.info("all %d instructions already have outputs in %s", len(rows), out)
        _write(out, done, stats, order)
        return out / OUTPUTS_FILE
    if done:
        logger.info("resuming: %d of %d instructions done", len(done), len(rows))
    _generate(engine, cfg, todo, out, (done, stats, order), batch_size, progress, fp, versions, len(rows))
    return out / OUTPUTS_FILE


def _generate(engine, cfg: GenerationConfig, todo: list, out: Path, state: tuple, batch_size: int, progress: bool,
              fp: str, versions: dict, total: int) -> None:
    done, stats, order = state
    device = cfg.device or "auto"
    bar = tqdm(total=total, initial=total - len(todo), desc=f"alpaca-eval {cfg.method}", disable=not progress)
    for i in range(0, len(todo), batch_size):
        batch = todo[i: i + batch_size]
        t0 = time.perf_counter()
        results = engine.generate([r["instruction"] for r in batch], batch_size=len(batch))
        wall = time.perf_counter() - t0
        for r, res in zip(batch, results):
            ins = r["instruction"]
            done[ins] = {"instruction": ins, "output": res.text.strip(), "generator": cfg.generator,
                         "dataset": r["dataset"]}
            stats[ins] = {"instruction": ins, "generator": cfg.generator, "method": cfg.method,
                          "score": res.score, "beam_scores": [b.score for b in res.beams],
                          "response_tokens": res.beams[0].n_tokens if res.beams else 0,
                          **res.stats, "batch_wall_time_s": wall, "device": device, "config_fingerprint": fp,
                          "versions": versions}
        _write(out, done, stats, order)
        bar.update(len(batch))
    bar.close()


def _write(out: Path, done: dict, stats: dict, order: dict) -> None:
    """Stats first, outputs second: the outputs file decides what is finished."""
    keys = sorted(done, key=order.__getitem__)
    atomic_write_json(out / STATS_FILE, [stats[k] for k in keys if k in stats], sort_keys=False)
    atomic_write_json(out / OUTPUTS_FILE, [done[k] for k in keys], sort_keys=False)
