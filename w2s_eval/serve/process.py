"""Start ``w2s-eval serve`` in a child process on loopback and stop it by its PID (tests, benchmarks).

The server runs in its own process group; :meth:`ServeProcess.stop` signals that group
(SIGTERM, then SIGKILL), as :func:`w2s_eval.endpoint.server.stop_pid` does for vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional, Sequence

from ..endpoint.server import free_port, stop_pid

__all__ = ["ServeProcess", "start_serve"]


@dataclass
class ServeProcess:
    process: subprocess.Popen
    port: int
    log_path: str
    api_key: Optional[str] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def health(self, timeout: float = 5.0) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        req = urllib.request.Request(self.url + "/health", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback URL built here)
            return json.loads(r.read())

    def stop(self, timeout: float = 20.0) -> None:
        stop_pid(self.process.pid, timeout, self.process)


def start_serve(args: Sequence[str], log_path: str, api_key: Optional[str] = None, port: Optional[int] = None,
                threads: int = 1, ready_timeout: float = 180.0) -> ServeProcess:
    """``python -m w2s_eval.cli serve ARGS --port P`` (host 127.0.0.1), waiting until ``/health`` answers.

    ``api_key`` goes to the server through ``$W2S_SERVE_API_KEY`` (not the command line, which other
    users of the machine can read); ``threads``: its torch/OpenMP threads.
    """
    port = port or free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("W2S_SERVE_API_KEY", None)
    if api_key:
        env["W2S_SERVE_API_KEY"] = api_key
    cmd = [sys.executable, "-m", "w2s_eval.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    server = ServeProcess(proc, port, log_path, api_key)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"w2s-eval serve exited with code {proc.returncode}; log {log_path}:\n"
                               f"{server.log_tail()}")
        try:
            if server.health(timeout=2.0).get("status") == "ok":
                return server
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"w2s-eval serve was not ready after {ready_timeout:.0f} s; log {log_path}:\n"
                       f"{server.log_tail()}")
