"""``w2s-eval serve``: weak-to-strong search behind an OpenAI-compatible API.

:func:`create_app` wraps an :class:`~w2s_eval.engine.Engine` in a FastAPI app
(``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``) whose
:class:`Batcher` runs the prompts of concurrent requests as batched search. See the
docs/serve.md.
"""

from .app import create_app
from .batcher import Batcher, Job
from .protocol import APIError, Limits, ServeConfig

__all__ = ["ServeConfig", "create_app", "Batcher", "Job", "APIError", "Limits"]
