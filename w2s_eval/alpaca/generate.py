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

Shards (``--shard I/N``, :mod:`w2s_eval.sharding`): shard I computes every N-th batch of instructions from batch I
into ``model_outputs.shard-I-of-N.json`` and ``search_stats.shard-I-of-N.json`` (locked while it runs); a run
without ``--shard`` (or ``w2s-eval alpaca-eval merge``) first folds the finished shards into the two files above,
which are then those of one process (outputs byte for byte; the stats differ in their wall times).

A rerun with the same config continues where the last one stopped; a directory made
with another config is refused, naming the first differing field; a second process writing the
same directory is refused (:func:`w2s_eval.provenance.run_dir_lock`). Everything that can be
checked (settings, instruction file, --out, the models loading, each prompt fitting the
strong model's context) is checked before the first file is written, so a failed run never
blocks its own --out. Run directories made before the EngineSpec (no ``rm_weight`` in their
identity) are refused naming that field: finish them with the version that made them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

from tqdm.auto import tqdm

from ..assets import ensure_writable_dir
from ..checks import check_positive_int
from ..extras import require
from ..provenance import (
    atomic_write_json,
    atomic_write_text,
    check_identity,
    check_writable_dir,
    fingerprint,
    package_versions,
    run_dir_lock,
)
from ..sharding import Shard, ShardBusyError, file_lock, shard_files
from .data import load_instructions, load_rows
from .decoder import (
    AlpacaEngine,
    GenerationConfig,
    build_alpaca_engine,
    model_configs_dict,
    resolve_served_model,
)

logger = logging.getLogger(__name__)

__all__ = ["run_generate", "merge_outputs", "OUTPUTS_FILE", "STATS_FILE", "RUN_CONFIG_FILE", "MODEL_CONFIGS_FILE"]

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
        raise FileExistsError(
            f"{out / OUTPUTS_FILE} exists but {cfg_path.name} does not: it was not made by this "
            "command (or by another version); use a new --out directory"
        )
    check_identity(cfg_path, identity, str(out), fix="Use the same settings to resume, or a new --out directory")
    check_writable_dir(out, "--out", _OUT_FIX)


def _write_model_configs(out: Path, cfg: GenerationConfig, batch_size: int) -> None:
    require("yaml", "alpaca")
    import yaml

    header = (
        "# AlpacaEval models_configs entry. alpaca_eval 0.6.6 resolves fn_completions by name from a fixed\n"
        "# list; load this file with w2s_eval.alpaca.decoder.load_model_configs(DIR) and pass the result as\n"
        "# alpaca_eval.evaluate_from_model(model_configs=...), which accepts the decoder as a callable.\n"
        "# For a leaderboard submission copy this directory to models_configs/<generator name>/.\n"
    )
    body = yaml.safe_dump(model_configs_dict(cfg, batch_size=batch_size), sort_keys=False, allow_unicode=True)
    atomic_write_text(out / MODEL_CONFIGS_FILE, header + body)
    atomic_write_text(out / "prompt.txt", "{instruction}")  # the decoder applies the chat template


def _names(shard: Optional[Shard]) -> tuple[str, str]:
    """The outputs and stats files of a run (``shard`` None) or of one shard."""
    return (OUTPUTS_FILE, STATS_FILE) if shard is None else (shard.file(OUTPUTS_FILE), shard.file(STATS_FILE))


def _load_done(out: Path, order: dict[str, int], generator: str, names=(OUTPUTS_FILE, STATS_FILE)) -> tuple:
    """Finished rows of an earlier run (outputs and their stats; files ``names``), by instruction."""
    (outputs, stats_file), done, stats = names, {}, {}
    if (out / outputs).exists():
        for r in load_rows(out / outputs):
            if r.get("instruction") not in order or r.get("generator") != generator:
                raise ValueError(
                    f"{out / outputs} holds a row not from this run ({str(r.get('instruction'))[:60]!r}, "
                    f"generator {r.get('generator')!r}); use a new --out directory"
                )
            done[r["instruction"]] = r
    if (out / stats_file).exists():
        stats = {r["instruction"]: r for r in load_rows(out / stats_file) if r.get("instruction") in done}
    return done, stats


def _merge(out: Path, order: dict[str, int], generator: str) -> int:
    """Fold every finished shard into the run's outputs and stats (instruction order) and remove its files;
    returns the outputs added. A shard still running (locked) is left for later."""
    shards = shard_files(out, OUTPUTS_FILE)
    if not shards:
        return 0
    with file_lock(out / OUTPUTS_FILE, f"the outputs of {out}"):
        done, stats = _load_done(out, order, generator)
        n, merged = len(done), []
        for shard, path in shards:
            try:
                with file_lock(path, f"shard {shard} of {out}"):
                    more, more_stats = _load_done(out, order, generator, _names(shard))
                    done.update({k: v for k, v in more.items() if k not in done})
                    stats.update({k: v for k, v in more_stats.items() if k not in stats})
                    merged.append(shard)
            except ShardBusyError:
                logger.warning("shard %s of %s is still running; it is merged by a later command", shard, out)
        _write(out, done, stats, order)
        for shard in merged:
            for name in _names(shard):
                (out / name).unlink(missing_ok=True)
                (out / f"{name}.lock").unlink(missing_ok=True)
    return len(done) - n


def merge_outputs(out_dir: Union[str, Path], instructions: Union[str, Path]) -> int:
    """``w2s-eval alpaca-eval merge``: fold the finished shards of the run in ``out_dir`` (made from the instruction
    set ``instructions``) into its outputs; returns the outputs added."""
    out = Path(out_dir)
    if not (out / RUN_CONFIG_FILE).exists():
        raise FileNotFoundError(f"{out} holds no {RUN_CONFIG_FILE}: not an `alpaca-eval generate` --out directory")
    identity = json.loads((out / RUN_CONFIG_FILE).read_text(encoding="utf-8"))["identity"]
    rows = load_instructions(instructions)
    if fingerprint(rows) != identity.get("instructions_sha256"):
        raise ValueError(f"--instructions {instructions} is not the instruction set {out} was made from; give that one")
    return _merge(out, {r["instruction"]: i for i, r in enumerate(rows)}, identity["generator"])


def _ready_engine(cfg: GenerationConfig, engine: Optional[AlpacaEngine], todo: list[dict]) -> AlpacaEngine:
    """The loaded engine for ``cfg``, checked against the instructions still to do."""
    engine = build_alpaca_engine(cfg) if engine is None else engine.for_config(cfg)
    check = getattr(engine, "check_fit", None)
    if check is not None:
        check([r["instruction"] for r in todo])
    return engine


def run_generate(
    cfg: GenerationConfig,
    instructions: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    device: Optional[str] = None,
    batch_size: int = 8,
    limit: Optional[int] = None,
    progress: bool = True,
    engine: Optional[AlpacaEngine] = None,
    shard: Optional[Shard] = None,
) -> Path:
    """Write AlpacaEval model outputs of ``cfg`` for an instruction set into ``out_dir``; its path.

    ``instructions``: a JSON/JSONL file, ``alpaca_eval`` (hub) or ``offline`` (fetched baseline).
    ``device``: instead of ``cfg.device``. ``limit``: only the first N instructions (a later run may
    raise it and continue). ``engine``: an already loaded engine for ``cfg`` (else the models are
    loaded here). Over an endpoint without ``strong_model``, the server is asked for its one model's
    name, which then enters the generator name and the run's identity. ``shard``: only that shard's batches, into
    its own files (see the module docstring); returns its outputs file.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("limit", limit, allow_none=True)
    if device is not None:
        cfg = replace(cfg, device=device)
    all_rows = load_instructions(instructions)
    cfg = resolve_served_model(cfg)
    out = Path(out_dir)
    if shard is not None:  # a shard writes its own files, under their lock; shards run side by side
        return _run_locked(cfg, all_rows, out, batch_size, limit, progress, engine, shard)
    with run_dir_lock(out, "--out"):
        return _run_locked(cfg, all_rows, out, batch_size, limit, progress, engine, shard)


def _run_locked(
    cfg: GenerationConfig,
    all_rows: list,
    out: Path,
    batch_size: int,
    limit: Optional[int],
    progress: bool,
    engine: Optional[AlpacaEngine],
    shard: Optional[Shard],
) -> Path:
    """:func:`run_generate` with the output directory's lock held (a shard: its own files' lock)."""
    identity = _identity(cfg, all_rows)
    rows = all_rows[:limit] if limit is not None else all_rows
    _check_dir(out, identity)
    order = {r["instruction"]: i for i, r in enumerate(all_rows)}
    if shard is None:
        _merge(out, order, cfg.generator)
    names = _names(shard)
    done, stats = _load_done(out, order, cfg.generator, names)
    finished = set(done) | (set(_load_done(out, order, cfg.generator)[0]) if shard is not None else set())
    rows = rows if shard is None else shard.select(rows, batch_size)
    todo = [r for r in rows if r["instruction"] not in finished]
    if todo:
        engine = _ready_engine(cfg, engine, todo)  # models load and prompts fit before anything is written
    versions, fp = package_versions(), fingerprint(identity)
    ensure_writable_dir(out, "--out", _OUT_FIX)
    atomic_write_json(
        out / RUN_CONFIG_FILE,
        {
            "identity": identity,
            "fingerprint": fp,
            "engine": cfg.engine_spec().to_dict(),
            "batch_size": batch_size,
            "versions": versions,
        },
        sort_keys=False,
    )
    _write_model_configs(out, cfg, batch_size)
    with file_lock(out / names[0], f"the outputs of {out}" if shard is None else f"shard {shard} of {out}"):
        if not todo:
            logger.info("all %d instructions already have outputs in %s", len(rows), out)
            _write(out, done, stats, order, names)
            return out / names[0]
        if done:
            logger.info("resuming: %d of %d instructions done", len(done), len(rows))
        state = (done, stats, order, names)
        _generate(engine, cfg, todo, out, state, batch_size, progress, fp, versions, len(rows))
    return out / names[0]


def _generate(
    engine,
    cfg: GenerationConfig,
    todo: list,
    out: Path,
    state: tuple,
    batch_size: int,
    progress: bool,
    fp: str,
    versions: dict,
    total: int,
) -> None:
    done, stats, order, names = state
    device = cfg.device or "auto"
    bar = tqdm(total=total, initial=total - len(todo), desc=f"alpaca-eval {cfg.method}", disable=not progress)
    for i in range(0, len(todo), batch_size):
        batch = todo[i : i + batch_size]
        t0 = time.perf_counter()
        results = engine.generate([r["instruction"] for r in batch], batch_size=len(batch))
        wall = time.perf_counter() - t0
        for r, res in zip(batch, results):
            ins = r["instruction"]
            done[ins] = {
                "instruction": ins,
                "output": res.text.strip(),
                "generator": cfg.generator,
                "dataset": r["dataset"],
            }
            stats[ins] = {
                "instruction": ins,
                "generator": cfg.generator,
                "method": cfg.method,
                "score": res.score,
                "beam_scores": [b.score for b in res.beams],
                "response_tokens": res.beams[0].n_tokens if res.beams else 0,
                **res.stats,
                "batch_wall_time_s": wall,
                "device": device,
                "config_fingerprint": fp,
                "versions": versions,
            }
        _write(out, done, stats, order, names)
        bar.update(len(batch))
    bar.close()


def _write(out: Path, done: dict, stats: dict, order: dict, names=(OUTPUTS_FILE, STATS_FILE)) -> None:
    """Stats first, outputs second: the outputs file decides what is finished."""
    keys = sorted(done, key=order.__getitem__)
    atomic_write_json(out / names[1], [stats[k] for k in keys if k in stats], sort_keys=False)
    atomic_write_json(out / names[0], [done[k] for k in keys], sort_keys=False)
