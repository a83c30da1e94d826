"""``lm_eval --model w2s``: weak-to-strong search as an lm-evaluation-harness backend.

- :mod:`w2s_eval.lm_eval.backend`: the ``W2SLM`` model class: lm-eval's HFLM over the strong model
  of :func:`w2s_eval.build_engine`, with the search's ``generate_until`` and the guide-tilted log-likelihoods.
- :mod:`w2s_eval.lm_eval.hook`: the startup hook that lets the stock ``lm_eval``
  command of lm-eval 0.4.13 find ``--model w2s`` (it has no plugin discovery).
- :mod:`w2s_eval.lm_eval.tasks`: datasets, filters and metrics of the ``w2s_*`` tasks.
- ``python -m w2s_eval.lm_eval ...``: lm-eval's CLI with ``w2s`` registered.
"""

from __future__ import annotations

__all__ = ["register"]


def register():
    """Register ``w2s`` (and any other ``lm_eval.models`` entry point) with lm-eval's model
    registry, after lm-eval's own backends; returns the registry. Idempotent."""
    import lm_eval.api.registry as registry

    from ._pth_hook import _w2s_eval_lm_eval_hook

    return _w2s_eval_lm_eval_hook(install=False)(registry, use_fallback=True)
