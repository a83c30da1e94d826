"""``w2s-eval serve``: the engine behind an OpenAI-compatible HTTP API (uvicorn)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

import uvicorn  # the package's __init__ has checked the [serve] extra

from ..config import parse_method
from ..engine import build_engine
from ..flags import add_spec_arguments, spec_from_namespace
from ..world.strong import with_strong_resolved
from .app import create_app
from .connection import uvicorn_settings
from .protocol import Limits, ServeConfig

logger = logging.getLogger(__name__)

__all__ = ["add_commands", "run_serve"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_commands(sub) -> None:

    p = sub.add_parser(
        "serve",
        help="serve guided search behind an OpenAI-compatible API (/v1/completions, /v1/chat/completions)",
        description="Serve base/BoN/CBS/EFT behind an OpenAI-compatible API. A request picks its method "
        "with model='cbs:w=2,k=2,l=30' (or the body field method=...); the served name "
        "(--served-model-name) means --method.",
    )
    add_spec_arguments(p, defaults={"tuned_template": "auto", "untuned_template": "auto"})
    p.add_argument("--method", default="cbs:w=4,k=4,l=5", help="method of requests that name the served model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    add_spec_arguments(p, cls=ServeConfig, exclude=("limits",))  # the server's settings and limits: one flag a field
    add_spec_arguments(p, cls=Limits)
    p.set_defaults(func=run_serve)


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The server's :class:`~.protocol.ServeConfig` (limits included) from parsed flags."""
    return spec_from_namespace(
        args,
        cls=ServeConfig,
        limits=spec_from_namespace(args, cls=Limits),
        api_key=args.api_key or os.environ.get("W2S_SERVE_API_KEY") or None,
    )


def build_server(args: argparse.Namespace, cfg: Optional[ServeConfig] = None):
    """The ASGI app for parsed flags (models loaded, method checked); ``cfg``: the server's settings, when read."""
    cfg = cfg or serve_config(args)
    spec = with_strong_resolved(spec_from_namespace(args))
    method = parse_method(args.method)
    spec.check_method(method)
    engine = build_engine(spec)
    engine.check(method)
    if args.host not in _LOOPBACK and cfg.api_key is None:
        logger.warning(
            "serving on %s without --api-key: anyone who reaches this address can use the models; "
            "set --api-key and put TLS in front (a reverse proxy)",
            args.host,
        )
    return create_app(engine, cfg, method)


def run_serve(args: argparse.Namespace) -> int:
    cfg = serve_config(args)
    app = build_server(args, cfg)
    print(
        f"w2s-eval serve: http://{args.host}:{args.port}/v1 (model {args.served_model_name!r} = {args.method}; "
        "or a method spec as the model name)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **uvicorn_settings(cfg))
    return 0
