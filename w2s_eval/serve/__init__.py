"""``w2s-eval serve``: weak-to-strong search behind an OpenAI-compatible API.

:func:`create_app` wraps an :class:`~w2s_eval.engine.Engine` in a FastAPI app
(``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``) whose
:class:`Batcher` runs the prompts of concurrent requests as batched search. See the
docs/serve.md.
"""

from ..extras import require

for _module in ("fastapi", "uvicorn", "pydantic", "lm_eval"):
    require(_module, "serve")

from .app import create_app  # noqa: E402  (after the check that names the extra)
from .batcher import Batcher, Job  # noqa: E402
from .protocol import APIError, Limits, ServeConfig  # noqa: E402

__all__ = ["ServeConfig", "create_app", "Batcher", "Job", "APIError", "Limits"]
