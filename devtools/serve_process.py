"""Start ``w2s-eval serve`` in a child process on loopback and stop it by its PID (tests, benchmarks).

The server runs in its own process group; :meth:`ServeProcess.stop` signals that group
(SIGTERM, then SIGKILL). Starting, waiting and stopping are vLLM's (:mod:`devtools.vllm_server`).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from typing import Optional, Sequence

from .vllm_server import ServerProcess, free_port, launch, wait_for

__all__ = ["ServeProcess", "start_serve"]


@dataclass
class ServeProcess(ServerProcess):
    """A running ``w2s-eval serve``: its process and log file, port and API key."""

    port: int = 0
    api_key: Optional[str] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self, timeout: float = 5.0) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        req = urllib.request.Request(self.url + "/health", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback URL built here)
            return json.loads(r.read())


def start_serve(
    args: Sequence[str],
    log_path: str,
    api_key: Optional[str] = None,
    port: Optional[int] = None,
    threads: int = 1,
    ready_timeout: float = 180.0,
) -> ServeProcess:
    """``python -m w2s_eval.cli serve ARGS --port P`` (host 127.0.0.1), waiting until ``/health`` answers.

    ``api_key`` goes to the server through ``$W2S_SERVE_API_KEY`` (not the command line, which other
    users of the machine can read); ``threads``: its torch/OpenMP threads.
    """
    port = port or free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    env.pop("W2S_SERVE_API_KEY", None)
    if api_key:
        env["W2S_SERVE_API_KEY"] = api_key
    cmd = [sys.executable, "-m", "w2s_eval.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    server = ServeProcess(launch(cmd, env, log_path), log_path, port, api_key)
    wait_for(
        server, lambda: server.health(timeout=2.0).get("status") == "ok", ready_timeout, "w2s-eval serve", poll=0.5
    )
    return server
