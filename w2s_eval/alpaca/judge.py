"""``w2s-eval alpaca-eval judge``: an offline AlpacaEval judge built on a reward model.

A reward model (TRL RewardTrainer / HF sequence-classification format, one output,
chat template applied) scores every model output r_m and every reference output r_r
for the same instruction. AlpacaEval's annotations put the reference in ``output_1``
and the evaluated model in ``output_2``; its preference is 1 (reference wins) .. 2
(model wins), 1.5 a draw. So the judge's preference is

    preference = 1 + sigmoid(r_m - r_r)

and AlpacaEval's own ``alpaca_eval.metrics.get_winrate`` turns the preferences into the
win rate (the mean of preference - 1, in %), its standard error and the counts. The
length-controlled win rate (``get_length_controlled_winrate``) needs AlpacaEval's
per-instruction difficulty of the official set (a hub file); when it cannot be had,
the result says why instead of a NaN.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from ..checks import check_positive_int
from ..engine import check_model_path, load_classifier
from ..extras import require
from ..guide import score_candidates
from ..provenance import atomic_write_json, atomic_write_text, package_versions
from ..scorers import RewardModelScorer
from .data import check_same_instructions, load_outputs, official_instruction_index

logger = logging.getLogger(__name__)

__all__ = ["judge_outputs", "write_judgement", "stack_leaderboard", "LEADERBOARD_COLUMNS", "load_reward_scorer"]

LEADERBOARD_COLUMNS = (
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "mode",
    "avg_length",
    "length_controlled_winrate",
    "lc_standard_error",
    "annotator",
    "reference",
    "lc_note",
)
_HUB_REPO, _HUB_FILE = "tatsu-lab/alpaca_eval", "df_gamed.csv"


def load_reward_scorer(path: str, dtype="auto", device="auto", batch_size: int = 16):
    """A :class:`~w2s_eval.scorers.RewardModelScorer` for the reward model at ``path`` (one output label)."""

    check_model_path("reward_model", str(path))
    model, tok = load_classifier(path, dtype=dtype, device=device)
    return RewardModelScorer(model, tok, name=str(path), batch_size=batch_size)


def _score_all(
    scorer: Callable, prompts: list[str], responses: list[str], batch_size: int, desc: str, progress: bool
) -> tuple[list[float], int]:
    values, tokens = [], 0
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress)
    for i in range(0, len(prompts), batch_size):
        v, t = score_candidates(
            scorer,
            prompts[i : i + batch_size],
            responses[i : i + batch_size],
            [True] * len(prompts[i : i + batch_size]),
        )
        values += v
        tokens += sum(t)
        bar.update(len(v))
    bar.close()
    return values, tokens


def _single_name(rows: Sequence[dict], what: str, default: str) -> str:
    names = {r.get("generator") for r in rows if r.get("generator") is not None}
    if len(names) > 1:
        raise ValueError(
            f"{what} hold {len(names)} generators ({', '.join(sorted(map(str, names))[:4])}); "
            "judge one model at a time (split the file) or pass --name"
        )
    return str(names.pop()) if names else default


def _plain(x):
    """numpy scalars -> Python numbers (JSON/CSV friendly)."""
    return x.item() if hasattr(x, "item") else x


def _lc_data_note() -> Optional[str]:
    """None if AlpacaEval's instruction-difficulty file can be had (cached, or the hub may be reached)."""
    try:
        from alpaca_eval import constants
        from huggingface_hub import try_to_load_from_cache
    except ImportError as e:
        return f"not computed: {e}"
    cached = try_to_load_from_cache(_HUB_REPO, _HUB_FILE, cache_dir=constants.DEFAULT_CACHE_DIR, repo_type="dataset")
    if isinstance(cached, str):
        return None
    need = (
        f"not computed: it needs AlpacaEval's instruction difficulty ({_HUB_REPO}/{_HUB_FILE} on the Hugging Face hub)"
    )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no"):
        return f"{need}, which is not cached and the hub is offline (HF_HUB_OFFLINE)"
    if not any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        from urllib.parse import urlparse

        from huggingface_hub import constants as hf

        url = urlparse(hf.ENDPOINT)
        try:  # a quick probe instead of the hub client's minute of retries
            socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
        except OSError as e:
            return f"{need}, which is not cached, and {url.hostname} cannot be reached ({e})"
    return None


def _length_controlled(df, lc: str) -> tuple[Optional[dict], str]:
    """AlpacaEval's length-controlled win rate, or (None, why it was not computed)."""
    if lc == "off":
        return None, "not computed: switched off (--lc off)"
    index = official_instruction_index()
    if index is None:
        return None, (
            "not computed: it needs each instruction's row in the official AlpacaEval set (to look up "
            "AlpacaEval's instruction difficulty); run `w2s-eval alpaca-eval fetch-data` first"
        )
    missing = sum(1 for ins in df["instruction"] if ins not in index)
    if missing:
        return None, (
            f"not computed: {missing} of {len(df)} instructions are not from the official AlpacaEval set, "
            "and AlpacaEval's instruction difficulty is defined only for that set"
        )
    note = _lc_data_note()
    if note:
        return None, note
    from alpaca_eval.metrics import get_length_controlled_winrate

    frame = df.copy()
    frame.index = [index[ins] for ins in frame["instruction"]]  # AlpacaEval reads the row index as "index"
    frame = frame.sort_index()
    try:
        out = get_length_controlled_winrate(frame, save_weights_dir=None, is_add_glm_preference_inplace=False)
    except Exception as e:  # hub unreachable, too few rows for the GLM's cross-validation, ...
        return None, f"not computed: AlpacaEval's length-controlled metric failed ({type(e).__name__}: {str(e)[:200]})"
    lcw, lcse = float(out["length_controlled_winrate"]), float(out.get("lc_standard_error", float("nan")))
    if not math.isfinite(lcw):
        return None, "not computed: AlpacaEval's length-controlled GLM gave no finite value"
    return {"length_controlled_winrate": lcw, "lc_standard_error": lcse if math.isfinite(lcse) else None}, "computed"


def judge_outputs(
    model_outputs,
    reference_outputs,
    scorer: Callable,
    *,
    annotator: str = "reward_model",
    name: Optional[str] = None,
    batch_size: int = 16,
    lc: str = "auto",
    subset: bool = False,
    progress: bool = False,
) -> dict:
    """Judge ``model_outputs`` against ``reference_outputs`` with ``scorer``; a dict with
    ``annotations`` (AlpacaEval rows), ``metrics``, ``row`` (the leaderboard row), ``name``, ``reference``.

    model_outputs / reference_outputs: paths (or ``offline``/``alpaca_eval``) or lists of rows.
    scorer: ``scorer(prompts, responses, finished) -> scores`` (e.g. a RewardModelScorer); any callable works.
    lc: ``auto`` (compute AlpacaEval's length-controlled win rate where its inputs exist) or ``off``.
    subset: the model outputs may cover part of the reference set (e.g. a ``--limit`` run); only
    those instructions are judged. Otherwise both must hold the same instructions.
    """
    if lc not in ("auto", "off"):
        raise ValueError(f"lc must be 'auto' or 'off', got {lc!r}")
    check_positive_int("batch_size", batch_size)
    mrows = load_outputs(model_outputs, "model outputs")
    rrows = load_outputs(reference_outputs, "reference outputs")
    if subset:
        wanted = {m["instruction"] for m in mrows}
        rrows = [r for r in rrows if r["instruction"] in wanted]
    check_same_instructions(mrows, rrows)
    name = name or _single_name(mrows, "the model outputs", "model")
    ref_name = _single_name(rrows, "the reference outputs", "reference")
    by_ins = {r["instruction"]: r for r in rrows}
    pairs = [(m, by_ins[m["instruction"]]) for m in mrows]
    instructions = [m["instruction"] for m, _ in pairs]
    t0 = time.perf_counter()
    s_model, tok_m = _score_all(
        scorer, instructions, [m["output"] for m, _ in pairs], batch_size, "judge: model outputs", progress
    )
    s_ref, tok_r = _score_all(
        scorer, instructions, [r["output"] for _, r in pairs], batch_size, "judge: reference outputs", progress
    )
    pref = 1.0 + torch.sigmoid(torch.tensor(s_model, dtype=torch.float64) - torch.tensor(s_ref, dtype=torch.float64))
    annotations = []
    for (m, r), sm, sr, p in zip(pairs, s_model, s_ref, pref.tolist()):
        annotations.append(
            {
                "instruction": m["instruction"],
                "dataset": m.get("dataset", r.get("dataset")),
                "output_1": r["output"],
                "generator_1": ref_name,
                "output_2": m["output"],
                "generator_2": name,
                "annotator": annotator,
                "preference": p,
                "reward_1": sr,
                "reward_2": sm,
            }
        )

    require("pandas", "alpaca")
    import pandas as pd
    from alpaca_eval.metrics import get_winrate

    df = pd.DataFrame(annotations)
    metrics = {k: _plain(v) for k, v in get_winrate(df).items()}
    lc_metrics, lc_note = _length_controlled(df, lc)
    metrics.update(lc_metrics or {})
    row = {c: "" for c in LEADERBOARD_COLUMNS}
    row.update({k: v for k, v in metrics.items() if k in row})
    row.update(
        mode="community",
        avg_length=int(round(sum(len(m["output"]) for m in mrows) / len(mrows))),
        annotator=annotator,
        reference=ref_name,
        lc_note=lc_note,
    )
    return {
        "name": name,
        "reference": ref_name,
        "annotator": annotator,
        "annotations": annotations,
        "metrics": metrics,
        "lc_note": lc_note,
        "row": row,
        "stats": {"judge_tokens": tok_m + tok_r, "wall_time_s": time.perf_counter() - t0, "n": len(pairs)},
    }


def _csv_text(rows: dict[str, dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["", *LEADERBOARD_COLUMNS])
    for name, row in rows.items():
        w.writerow([name, *(row.get(c, "") for c in LEADERBOARD_COLUMNS)])
    return buf.getvalue()


def _read_table(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0] != "" or "win_rate" not in header:
            raise ValueError(f"{path} is not an AlpacaEval leaderboard CSV (first column unnamed, then win_rate, ...)")
        return {r[0]: dict(zip(header[1:], r[1:])) for r in reader if r}


def _checked_table(path: Path, name: str, row: dict) -> dict[str, dict]:
    """The rows of leaderboard ``path``, after checking ``row`` may join them (same judge and reference)."""
    table = _read_table(path) if path.exists() else {}
    for other, r in table.items():
        for key in ("annotator", "reference"):
            if other != name and r.get(key, "") != str(row[key]):
                raise ValueError(
                    f"{path}: row {other!r} has {key} {r.get(key)!r}, this one {row[key]!r}; rows of one "
                    "leaderboard need the same judge and reference; use another --leaderboard file"
                )
    return table


def stack_leaderboard(path: Union[str, Path], name: str, row: dict) -> None:
    """Add (or replace) the row ``name`` in the leaderboard CSV ``path``, sorted by win rate.

    Rows judged by another annotator or against another reference are refused: they do not compare.
    """
    path = Path(path)
    table = _checked_table(path, name, row)
    if name in table:
        logger.warning("replacing the row %r in %s", name, path)
    table[name] = {k: str(v) for k, v in row.items()}
    ordered = dict(sorted(table.items(), key=lambda kv: -float(kv[1].get("win_rate") or "nan")))
    atomic_write_text(path, _csv_text(ordered))


def _sha(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def write_judgement(
    result: dict,
    out_dir: Union[str, Path],
    identity: Optional[dict] = None,
    leaderboard: Optional[Union[str, Path]] = None,
) -> Path:
    """Write ``annotations.json``, ``leaderboard.csv`` (one row) and ``judge.json`` into ``out_dir``.

    A directory judged with another identity (other outputs, reference or judge) is refused.
    ``leaderboard``: also add the row to this shared leaderboard CSV.
    """
    out = Path(out_dir)
    identity = {
        **(identity or {}),
        "annotator": result["annotator"],
        "name": result["name"],
        "reference": result["reference"],
        "pairs_sha256": _sha([(a["instruction"], a["output_1"], a["output_2"]) for a in result["annotations"]]),
    }
    meta = out / "judge.json"
    if meta.exists():
        old = json.loads(meta.read_text(encoding="utf-8")).get("identity", {})
        for key in sorted(set(old) | set(identity)):
            if old.get(key) != identity.get(key):
                raise ValueError(
                    f"{out} holds a judgement with {key} {old.get(key)!r}, not {identity.get(key)!r}; "
                    "use a new --out directory (finished results are not overwritten)"
                )
    elif (out / "annotations.json").exists():
        raise FileExistsError(f"{out / 'annotations.json'} exists and was not written by this judge; use a new --out")
    if leaderboard:
        _checked_table(Path(leaderboard), result["name"], result["row"])  # fail before writing anything
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "annotations.json", result["annotations"], sort_keys=False)
    atomic_write_text(out / "leaderboard.csv", _csv_text({result["name"]: result["row"]}))
    atomic_write_json(
        meta,
        {
            "identity": identity,
            "metrics": result["metrics"],
            "lc_note": result["lc_note"],
            "stats": result["stats"],
            "versions": package_versions(),
        },
    )
    if leaderboard:
        stack_leaderboard(leaderboard, result["name"], result["row"])
    return out
