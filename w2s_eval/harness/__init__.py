"""The comparison harness: run methods on a world's prompts, record each result, and report.

Worlds (:class:`~w2s_eval.world_registry.World`) and their registry are in :mod:`w2s_eval.world_registry`.

- :mod:`.records`: the run config (an EngineSpec plus the grid), run directories, JSONL records, identity;
- :mod:`.compare`: :func:`run_compare` (every method on the same prompts and seeds);
- :mod:`.report` / :mod:`.plots`: tables (Markdown, CSV, LaTeX) and PNG plots from records;
- their commands ``w2s-eval compare``, ``report`` and ``demo`` are in :mod:`w2s_eval.cli`.
"""

from .compare import run_compare
from .plan import build_world_engine, make_run_config, world_spec
from .records import RunConfig
from .report import summarize, write_report

__all__ = [
    "RunConfig",
    "make_run_config",
    "world_spec",
    "build_world_engine",
    "run_compare",
    "summarize",
    "write_report",
]
