"""Per-request search statistics, written beside lm-eval's results.

lm-eval keeps each request's text; the search's own numbers (strong and guide token
forwards, rounds, samples, guide scores of the final beams, wall time, seed) go to
``w2s_requests_<time>_rank<r>.jsonl`` in the ``--output_path`` directory (or the
``stats_path`` model arg), one JSON line per request, flushed after every batch so a
crash keeps what was done. The first line is a header: resolved config and versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["output_dir_from_argv", "versions", "sampling_config", "greedy_hint", "StatsWriter", "result_record"]


def output_dir_from_argv(argv: Optional[Sequence[str]] = None) -> Optional[Path]:
    """The directory of lm-eval's ``--output_path`` / ``-o`` in this process's command line
    (a ``.json`` path means its parent, as lm-eval reads it); None when not given, or when
    this process is not the lm-eval CLI (another program's ``-o`` means something else)."""
    if argv is None:
        prog = sys.argv[0] if sys.argv else ""
        if os.path.basename(prog) not in ("lm_eval", "lm-eval") and not prog.endswith(os.path.join("lm_eval", "__main__.py")):
            return None
        argv = sys.argv[1:]
    argv = list(argv)
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--output_path", "-o", default=None)
    try:
        ns, _ = parser.parse_known_args(argv)
    except SystemExit:  # a malformed command line is lm-eval's to report
        return None
    if not ns.output_path:
        return None
    path = Path(ns.output_path)
    return path.parent if path.suffix == ".json" else path


def versions() -> dict:
    """The versions of the packages that decide results (:func:`w2s_eval.provenance.package_versions`)."""
    from ..provenance import package_versions

    return package_versions()


_SAMPLING_KEYS = {"until", "max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens", "do_sample",
                  "temperature", "top_k", "top_p"}


def _temperature(gen_kwargs: dict, default: Optional[float]) -> float:
    if gen_kwargs.get("do_sample") is False:
        return 0.0
    if "temperature" in gen_kwargs:
        return float(gen_kwargs["temperature"])
    if gen_kwargs.get("do_sample") is True:
        return default if default is not None else 1.0
    return default if default is not None else 0.0


def greedy_hint(args, gen_kwargs: dict) -> str:
    """How to make a greedy request sample, for the setting that made it greedy (see :func:`_temperature`)."""
    over = f" (overriding the model arg temperature={args.temperature})" if args.temperature else ""
    if gen_kwargs.get("do_sample") is False:
        return (f"the task sets do_sample=false{over}; pass --gen_kwargs do_sample=true,temperature=0.7 "
                "or change the task's generation_kwargs")
    if "temperature" in gen_kwargs:
        return (f"the task sets temperature={gen_kwargs['temperature']}{over}; pass --gen_kwargs temperature=0.7 "
                "or change the task's generation_kwargs")
    if args.temperature is not None:
        return f"the model arg temperature={args.temperature} asks for it; set temperature=0.7 (any value > 0)"
    return "give the task do_sample/temperature or the model arg temperature=0.7"


def sampling_config(args, gen_kwargs: Any, task: Optional[str], warn_once: Callable[..., None],
                    max_length: Optional[int] = None):
    """A request's :class:`~w2s_eval.config.SamplingConfig`: its generation kwargs, the model args
    (``args``) filling what the task leaves open; a bad setting (or new tokens that alone fill the strong
    model's context of ``max_length``) raises naming the task."""
    from lm_eval.models.utils import normalize_gen_kwargs

    from ..config import SamplingConfig

    where = f" (task {task})" if task else ""
    if not isinstance(gen_kwargs, dict):
        raise ValueError(f"w2s: generation kwargs must be a dict{where}, got {gen_kwargs!r}")
    until = gen_kwargs.get("until")
    if until is not None and not (isinstance(until, str) or
                                  (isinstance(until, list) and all(isinstance(s, str) for s in until))):
        raise ValueError(f"w2s: 'until'{where} must be a list of strings (or one string), got {until!r}; "
                         "fix generation_kwargs.until in the task YAML or --gen_kwargs")
    ignored = sorted(set(gen_kwargs) - _SAMPLING_KEYS)
    if ignored:
        warn_once(f"ignored:{ignored}", "w2s: ignoring generation kwargs %s (supported: %s)", ignored,
                  ", ".join(sorted(_SAMPLING_KEYS)))
    kw = normalize_gen_kwargs(gen_kwargs, args.max_gen_toks)
    top_k = gen_kwargs.get("top_k", args.top_k or 0)
    top_p = gen_kwargs.get("top_p", 1.0 if args.top_p is None else args.top_p)
    try:
        cfg = SamplingConfig(temperature=_temperature(gen_kwargs, args.temperature), top_k=int(top_k or 0),
                             top_p=float(top_p), max_new_tokens=int(kw["max_gen_toks"]),
                             stop=tuple(s for s in kw["until"] if s), seed=args.seed, truncation=args.truncation)
    except ValueError as e:
        raise ValueError(f"w2s: bad generation settings{where}: {e}") from None
    if max_length is not None and cfg.max_new_tokens >= max_length:
        given = set(gen_kwargs) & {"max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens"}
        source = ("the task's generation_kwargs (or --gen_kwargs max_gen_toks=...)" if given
                  else "the model arg max_gen_toks (the task gives none)")
        raise ValueError(f"w2s: max_gen_toks={cfg.max_new_tokens}{where} leaves no room for the prompt in the strong "
                         f"model's context of {max_length} tokens; lower it below {max_length} in {source}")
    return cfg


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def result_record(req, result, request_type: str, method_spec: str, sampling) -> dict:
    """One JSON-able line for a generate_until request and its SearchResult."""
    return {
        "request_type": request_type,
        "task": getattr(req, "task_name", None),
        "doc_id": getattr(req, "doc_id", None),
        "prompt_sha": _sha(req.args[0]),
        "method": method_spec,
        "sampling": {"temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
                     "max_new_tokens": sampling.max_new_tokens, "stop": list(sampling.stop), "seed": sampling.seed},
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
        self.totals = {"requests": 0, "strong_tokens": 0, "guide_tokens": 0, "samples": 0, "wall_time_s": 0.0}
        if directory is None:
            return
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().isoformat(timespec="seconds").replace(":", "-")
        self.path = directory / f"w2s_requests_{stamp}_rank{rank}.jsonl"
        self._write([{"header": True, "time": time.time(), **header}])
        logger.info("w2s search statistics -> %s", self.path)

    def _write(self, rows: list[dict]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, rows: list[dict], wall_time_s: float) -> None:
        for r in rows:
            self.totals["requests"] += 1
            for key in ("strong_tokens", "guide_tokens", "samples"):
                self.totals[key] += int(r.get(key) or 0)
        self.totals["wall_time_s"] += wall_time_s
        self._write(rows)
