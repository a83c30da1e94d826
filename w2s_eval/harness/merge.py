"""Assemble the shards of a comparison run into its ``records.jsonl``.

Shard I of N of ``compare --shard I/N`` writes ``records.shard-I-of-N.jsonl`` in the run directory
(:mod:`w2s_eval.sharding`). :func:`merge_shards` appends the records of every shard that is not running (its lock
is free) to ``records.jsonl``, skipping keys already there, in the order one process writes them: by method (the
grid's order), prompt batch, seed (the grid's order), then prompt, each line's bytes as the shard wrote them. So
the records of a sharded run, merged, are those of the same run in one process, line for line; only the clock
fields (``time``, ``wall_time_s``, ``batch_wall_time_s``) tell them apart. The merged shard files are removed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

from ..provenance import atomic_write_text
from ..sharding import Shard, ShardBusyError, file_lock, shard_files
from .records import CONFIG_FILE, RECORDS_FILE, RecordLog, read_records, record_key

__all__ = ["merge_shards", "pending_shards", "record_order", "records_view"]

logger = logging.getLogger(__name__)


def pending_shards(run_dir: os.PathLike) -> list:
    """[(Shard, path)] of the shard record files in ``run_dir``."""
    return shard_files(run_dir, RECORDS_FILE)


def record_order(grid: dict):
    """The sort key of records in the order one process writes them, for the run's ``grid`` (config.json)."""
    methods = {m: i for i, m in enumerate(grid.get("methods") or [])}
    seeds = {s: i for i, s in enumerate(grid.get("seeds") or [])}

    def key(record: dict) -> tuple:
        index = record.get("prompt_index")
        if index is None:  # a record made before records named their prompt's place: after the others
            return (math.inf,) * 4
        batch = index // int((record.get("config") or {}).get("batch_size") or 1)
        return (methods.get(record["method"], math.inf), batch, seeds.get(record["seed"], math.inf), index)

    return key


def _shard_lines(path: Path, config_hash: str) -> list:
    """[(record, its line)] of a shard file's complete lines; a truncated last line is dropped (recomputed later)."""
    records, truncated = read_records(path)
    if truncated is not None:
        logger.warning("%s: a truncated last line is dropped; its record is computed again by a later run", path)
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()][: len(records)]
    for i, r in enumerate(records):
        if r.get("config_hash") != config_hash:
            raise ValueError(
                f"{path}: record {i + 1} was made with another config ({r.get('config_hash')}, this "
                f"run is {config_hash}); move that file out of the run directory"
            )
    return list(zip(records, lines))


def merge_shards(run_dir: os.PathLike) -> int:
    """Append the finished shards' records to ``records.jsonl`` (see the module docstring); returns how many.
    A shard still running (its file locked) is left for a later merge."""
    run_dir = Path(run_dir)
    shards = pending_shards(run_dir)
    if not shards:
        return 0
    config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    main = run_dir / RECORDS_FILE
    with file_lock(main, f"the records of {run_dir}"):
        log = RecordLog(run_dir)  # repairs a truncated last line of records.jsonl
        new, merged = {}, []
        for shard, path in shards:
            try:
                with file_lock(path, f"shard {shard} of {run_dir}"):
                    for record, line in _shard_lines(path, config["config_hash"]):
                        key = record_key(record)
                        if key not in log.keys:
                            new.setdefault(key, (record, line))
                    merged.append(path)
            except ShardBusyError:
                logger.warning("shard %s of %s is still running; it is merged by a later command", shard, run_dir)
        order = record_order(config.get("grid") or {})
        lines = [line for _, line in sorted(new.values(), key=lambda rl: order(rl[0]))]
        if lines:
            body = main.read_bytes() if main.exists() else b""
            atomic_write_text(main, (body + b"".join(line + b"\n" for line in lines)).decode("utf-8"))
        for path in merged:
            path.unlink()
            path.with_name(path.name + ".lock").unlink(missing_ok=True)
    logger.info("%s: merged %d records from %d shard file(s)", run_dir, len(lines), len(merged))
    return len(lines)


def records_view(out: Path, prompts: list, batch_size: int, shard: Optional[Shard]) -> tuple:
    """What a run (``shard`` None; finished shards are merged first) or one shard computes: (its prompts, the name
    of its records file, the keys in records.jsonl, the keys recorded for it)."""
    if shard is None and pending_shards(out):
        merge_shards(out)
    name = RECORDS_FILE if shard is None else shard.file(RECORDS_FILE)
    main_keys = {record_key(r) for r in read_records(out / RECORDS_FILE, warn=False)[0]}
    recorded = main_keys | {record_key(r) for r in read_records(out / name, warn=False)[0]}
    return (prompts if shard is None else shard.select(prompts, batch_size)), name, main_keys, recorded
