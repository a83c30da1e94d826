"""Reading a compare run directory back: its records checked before anything is averaged (a missing, non-numeric
or non-finite number named by record and field; method specs canonical; a key recorded twice with other results
refused; records of another config than ``config.json`` refused), its not-run methods, and its models' FLOPs
(:func:`record_flops`: each record's own count, or an estimate from its counters and ``model_shapes.json``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from ..config import method_spec
from ..flops import ModelShape, total_flops
from ..provenance import diff_fields
from .records import CONFIG_FILE, RECORDS_FILE, SHAPES_FILE, read_records, record_key

__all__ = ["load_run", "check_records", "not_applicable_of", "load_shapes", "record_flops"]


def load_run(run_dir: Union[str, os.PathLike]) -> tuple:
    """(records, notes) of a run directory, each record checked (:func:`check_records`); refuses records made
    with different configs, or with another config than the directory's ``config.json``."""
    path = Path(run_dir) / RECORDS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no records in {run_dir} ({RECORDS_FILE} is missing); run `w2s-eval compare --out {run_dir} ...` first"
        )
    records, truncated = read_records(path)
    notes = []
    if truncated is not None:
        notes.append(f"the last line of {RECORDS_FILE} is truncated ({len(truncated)} characters) and was ignored")
    records = check_records(records, path, notes)
    hashes = {}
    for r in records:
        hashes.setdefault(r.get("config_hash"), r)
    if len(hashes) > 1:
        (h1, r1), (h2, r2) = list(hashes.items())[:2]
        diffs = diff_fields(r1.get("config", {}), r2.get("config", {}))
        diffs = [d for d in diffs if d[0] not in ("method", "seed", "device", "batch_size")] or diffs
        field = diffs[0][0] if diffs else "config_hash"
        raise ValueError(
            f"{path} mixes records of different configs ({h1} and {h2}; first differing field: {field}); "
            "report each run from its own directory"
        )
    stored = _config_hash(Path(run_dir))
    if stored is not None and hashes and next(iter(hashes)) != stored:
        raise ValueError(
            f"the records in {path} were made with config {next(iter(hashes))}, but the directory's "
            f"{CONFIG_FILE} is for config {stored}: records copied in from another run? Report each "
            "run from its own directory"
        )
    return records, notes


def _config_hash(run_dir: Path) -> Optional[str]:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["config_hash"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a w2s-eval run config ({type(e).__name__}: {e}); report a directory "
            "made by `w2s-eval compare`"
        ) from None


_NUMBERS = ("gold", "judge", "strong_tokens", "guide_tokens", "samples", "wall_time_s")  # what the table averages
_RESULT = ("response", "gold", "judge", "guide_score")  # what two records of one key must agree on


def _checked(r: dict, where: str) -> dict:
    """``r`` with its method spec canonical; ValueError naming the record and the field when a number the table
    uses is missing, not a number, or not finite."""
    fix = f"remove that line from {RECORDS_FILE} and run the same `w2s-eval compare` again to recompute it"
    try:
        spec = method_spec(r["method"])
    except ValueError as e:
        raise ValueError(f"{where}: method: {e}") from None
    for name in _NUMBERS + ("guide_score",):
        value = r.get(name)
        if name == "guide_score" and value is None:
            continue
        if name not in r:
            problem = "is missing"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problem = f"is {value!r} ({type(value).__name__}), not a number"
        elif not math.isfinite(value):
            problem = f"is {value} (not a finite number)"
        else:
            continue
        raise ValueError(f"{where}: {name} {problem}; {fix}")
    return r if spec == r["method"] else {**r, "method": spec}


def check_records(records: Sequence[dict], path: Union[str, os.PathLike], notes: Optional[list] = None) -> list:
    """The records of a records file, checked: every number the table uses present and finite (a ValueError
    names the record and the field), method specs canonical (``bon:n=02`` is ``bon:n=2``), and one record per
    (prompt, method, seed): a repeated record with the same results is dropped (with a note in ``notes``), one
    with other results is refused (two runs wrote into one directory, or a record was edited)."""
    out, first = [], {}
    dropped = 0
    for i, r in enumerate(records):
        where = (
            f"record {i + 1} of {path} (prompt {r.get('prompt_id')!r}, method {r.get('method')!r}, "
            f"seed {r.get('seed')!r})"
        )
        try:
            key = record_key(r)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: seed must be an integer") from None
        r = _checked(r, where)
        if key in first:
            j, other = first[key]
            diff = next((f for f in _RESULT if other.get(f) != r.get(f)), None)
            if diff is not None:
                raise ValueError(
                    f"{path} holds different records for prompt {key[0]!r}, method {key[1]}, seed "
                    f"{key[2]} (records {j + 1} and {i + 1}: {diff} {other.get(diff)!r} vs "
                    f"{r.get(diff)!r}); two runs wrote into one directory, or a record was edited: remove "
                    "the wrong one"
                )
            dropped += 1
            continue
        first[key] = (i, r)
        out.append(r)
    if dropped and notes is not None:
        notes.append(
            f"{dropped} repeated record(s) of a (prompt, method, seed) already recorded, with the same "
            "results, were left out"
        )
    return out


def load_shapes(run_dir: Union[str, os.PathLike]) -> dict:
    """{model role: ModelShape} of a run directory's ``model_shapes.json`` (empty without one)."""
    path = Path(run_dir) / SHAPES_FILE
    if not path.exists():
        return {}
    return {role: ModelShape.from_dict(d) for role, d in json.loads(path.read_text(encoding="utf-8")).items()}


def record_flops(record: dict, shapes: Optional[dict] = None) -> tuple:
    """(FLOPs of every model, FLOPs of the guides, estimated) of one record: its own count, or for a record
    without one (made before w2s-eval counted FLOPs) an estimate from its counters and ``shapes`` ({role:
    ModelShape}): ``strong_tokens`` on the strong model, ``guide_tokens`` shared evenly by the tuned and untuned
    guides (both read the same tokens: one tokenizer; EFT, and ``guide: implicit``) or all on the reward model
    (``guide: rm``), every token attending to ``max_new_tokens`` positions (the records hold no positions; the
    guides' prompt prefill is not in these counters). (None, None, False) when neither is possible."""
    compute = record.get("compute")
    if compute:
        guides = total_flops(c for role, c in compute.items() if role != "strong")
        return record.get("flops"), guides, False
    shapes = shapes or {}
    context = int(((record.get("config") or {}).get("sampling") or {}).get("max_new_tokens") or 1)
    per_token = {role: shape.flops(1, context - 1) for role, shape in shapes.items()}
    if "strong" not in per_token:
        return None, None, False
    tokens = record.get("guide_tokens") or 0
    if record.get("method", "").startswith("eft") or (record.get("config") or {}).get("guide") != "rm":
        roles = {"tuned": tokens / 2, "untuned": tokens / 2} if tokens else {}
    else:
        roles = {"reward_model": tokens} if tokens else {}
    if any(role not in per_token for role in roles):
        return None, None, False
    guides = sum(n * per_token[role] for role, n in roles.items())
    return record.get("strong_tokens", 0) * per_token["strong"] + guides, guides, True


def not_applicable_of(run_dir: Union[str, os.PathLike]) -> dict:
    """{method: why it was not run} as the run's ``config.json`` records it (empty without one)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("not_applicable") or {})
    except (ValueError, AttributeError, TypeError):
        return {}
