"""Per-request search statistics beside lm-eval's results: strong and guide token forwards, rounds, samples,
guide scores of the final beams, wall time and seed, one JSON line per request in ``w2s_requests_<time>_rank<r>.jsonl``
(in ``--output_path`` or the ``stats_path`` model arg; first line: resolved config and package versions), appended
and fsynced after every batch (:func:`w2s_eval.provenance.append_jsonl`), so a crash keeps what was done.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Optional

from ..provenance import append_jsonl, fingerprint

logger = logging.getLogger(__name__)

__all__ = ["output_dir_of_run", "StatsWriter", "result_record"]


def output_dir_of_run() -> Optional[Path]:
    """The directory of the ``EvaluationTracker`` that lm-eval's ``simple_evaluate`` runs with (the ``lm_eval`` CLI
    makes it from ``--output_path`` / ``-o``; a ``.json`` path means its parent, as lm-eval reads it), found in the
    ``simple_evaluate`` call that is building this model; None outside one, or when it has no output path."""
    import inspect

    from lm_eval import evaluator

    code = inspect.unwrap(evaluator.simple_evaluate).__code__
    frame = inspect.currentframe()
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    output = getattr(frame.f_locals.get("evaluation_tracker"), "output_path", None) if frame else None
    del frame
    if not output:
        return None
    path = Path(output)
    return path.parent if path.suffix == ".json" else path


def result_record(req, result, method_spec: str, sampling) -> dict:
    """One JSON-able line for a generate_until request and its SearchResult (``prompt_sha``: the
    prompt's :func:`~w2s_eval.provenance.fingerprint`)."""
    return {
        "request_type": "generate_until",
        "task": getattr(req, "task_name", None),
        "doc_id": getattr(req, "doc_id", None),
        "prompt_sha": fingerprint(req.args[0]),
        "method": method_spec,
        "sampling": {k: v for k, v in asdict(sampling).items() if k != "truncation"},
        "text": result.text,
        "score": result.score,
        "beam_scores": [b.score for b in result.beams],
        "beam_tokens": [b.n_tokens for b in result.beams],
        "ended": bool(result.beams[0].ended) if result.beams else None,
        **result.stats,
    }


class StatsWriter:
    """Appends JSON lines to one file per rank; also keeps running totals for the results JSON."""

    def __init__(self, directory: Optional[Path], rank: int, header: dict):
        self.path: Optional[Path] = None
        self.totals = {
            "requests": 0,
            "strong_tokens": 0,
            "guide_tokens": 0,
            "samples": 0,
            "flops": 0,
            "wall_time_s": 0.0,
        }
        if directory is None:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().isoformat(timespec="seconds").replace(":", "-")
        self.path = append_jsonl(
            Path(directory) / f"w2s_requests_{stamp}_rank{rank}.jsonl",
            [{"header": True, "time": time.time(), **header}],
            default=str,
        )
        logger.info("w2s search statistics -> %s", self.path)

    def add(self, rows: list[dict], wall_time_s: float) -> None:
        for r in rows:
            self.totals["requests"] += 1
            for key in ("strong_tokens", "guide_tokens", "samples"):
                self.totals[key] += int(r.get(key) or 0)
            flops, total = r.get("flops"), self.totals["flops"]  # None: unknown (a served strong model)
            self.totals["flops"] = None if flops is None or total is None else total + flops
        self.totals["wall_time_s"] += wall_time_s
        if self.path is not None:
            append_jsonl(self.path, rows, default=str)
