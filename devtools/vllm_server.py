"""Start and stop a local vLLM OpenAI-compatible server (tests, benchmarks, CI).

vLLM lives in its own virtual environment (``scripts/setup_vllm.sh VENV_DIR``):
its pinned torch / transformers differ from w2s-eval's. The server is bound to
loopback, started in its own process group, and stopped by its PID.

    python -m devtools.vllm_cli start --model DIR --name NAME --port 8000 --pid-file vllm.pid
    python -m devtools.vllm_cli stop --pid-file vllm.pid

On GPU machines run vLLM directly instead (``vllm serve ...``, see README.md, endpoint section).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "ServerProcess",
    "launch",
    "wait_for",
    "VLLMServer",
    "vllm_python",
    "free_port",
    "start_vllm",
    "wait_ready",
    "stop_pid",
    "save_test_model",
]

DEFAULT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "w2s-eval", "vllm-venv")


def vllm_python() -> Optional[str]:
    """The python of the vLLM environment: ``$W2S_VLLM_PYTHON``, else ``$W2S_VLLM_VENV/bin/python``
    (default venv ``~/.cache/w2s-eval/vllm-venv``); None when that file does not exist."""
    py = os.environ.get("W2S_VLLM_PYTHON")
    if not py:
        py = os.path.join(os.environ.get("W2S_VLLM_VENV") or DEFAULT_VENV, "bin", "python")
    return py if os.path.isfile(py) and os.access(py, os.X_OK) else None


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; a race with other processes is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A server this process started (:func:`launch`): its process, the leader of its own process group, and
    its log file."""

    process: subprocess.Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group (it started it), then SIGKILL after ``timeout``."""
        stop_pid(self.process.pid, timeout, self.process)


def launch(cmd: Sequence[str], env: dict, log_path: str) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so :func:`stop_pid` stops all of it), output appended to
    ``log_path``, no stdin."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def wait_for(server: ServerProcess, probe: Callable[[], Any], timeout: float, what: str, poll: float = 1.0) -> Any:
    """Call ``probe`` every ``poll`` s until it answers (a true value, returned; a connection error or bad JSON is
    no answer yet); raise with ``what`` and the log tail if the server exits first, or stop it after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"{what} exited with code {server.process.returncode} before it was ready; "
                f"log {server.log_path}:\n{server.log_tail()}"
            )
        try:
            answer = probe()
            if answer:
                return answer
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        time.sleep(poll)
    server.stop()
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s; log {server.log_path}:\n{server.log_tail()}")


@dataclass
class VLLMServer(ServerProcess):
    """A running vLLM server: its process and log file, URL (ending in ``/v1``) and served model name."""

    base_url: str = ""
    model: str = ""
    started_s: float = 0.0
    info: dict = field(default_factory=dict)


def stop_pid(pid: int, timeout: float = 30.0, process: Optional[subprocess.Popen] = None) -> None:
    """Stop a server started by :func:`start_vllm` (the leader of its own process group)."""

    def gone() -> bool:
        if process is not None:
            return process.poll() is not None
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if gone():
            break
        try:
            os.killpg(pid, sig)  # the group that start_vllm created for this server
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not gone():
            time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # stray engine workers of that group, if any
    except (ProcessLookupError, PermissionError):
        pass


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback URL built here)
        return json.loads(r.read().decode("utf-8"))


def wait_ready(server: VLLMServer, timeout: float = 300.0) -> None:
    """Poll ``/v1/models`` until the server answers; raise with its log tail if it exits or times out."""
    t0 = time.monotonic()
    server.info = wait_for(
        server, lambda: get_json(server.base_url + "/models", timeout=2.0), timeout, f"vLLM server at {server.base_url}"
    )
    server.started_s = time.monotonic() - t0


def start_vllm(
    model_dir: str,
    name: str = "strong",
    port: Optional[int] = None,
    python: Optional[str] = None,
    max_model_len: int = 1024,
    dtype: str = "float32",
    kv_cache_gib: int = 2,
    log_path: Optional[str] = None,
    extra_args: Sequence[str] = (),
    cache_root: Optional[str] = None,
    threads: Optional[int] = None,
    ready_timeout: float = 300.0,
    wait: bool = True,
) -> VLLMServer:
    """Start ``vllm.entrypoints.openai.api_server`` on 127.0.0.1 for a local model directory.

    ``python``: the vLLM environment's interpreter (default :func:`vllm_python`). CPU-build
    settings (``--enforce-eager``, float32, ``VLLM_CPU_KVCACHE_SPACE``) are the ones that work
    here; ``extra_args`` go to vLLM as they are (e.g. ``["--tensor-parallel-size", "4"]``).
    Chunked prefill is off: vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a
    seeded request's prefill is split across steps, which many concurrent beams cause.
    """
    python = python or vllm_python()
    if not python:
        raise FileNotFoundError(
            "no vLLM environment: run scripts/setup_vllm.sh VENV_DIR and set W2S_VLLM_PYTHON=VENV_DIR/bin/python"
        )
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
    port = port or free_port()
    log_path = log_path or os.path.join(os.path.dirname(os.path.abspath(model_dir)), f"vllm-{port}.log")
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--served-model-name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--enforce-eager",
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        str(max(max_model_len, 4096)),
        *extra_args,
    ]
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_CPU_KVCACHE_SPACE=str(int(kv_cache_gib)),
        TOKENIZERS_PARALLELISM="false",
    )
    if cache_root:
        env["VLLM_CACHE_ROOT"] = cache_root
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.pop("PYTHONPATH", None)  # keep w2s-eval's site-packages out of vLLM's interpreter
    logger.info("starting vLLM: %s", " ".join(cmd))
    server = VLLMServer(launch(cmd, env, log_path), log_path, f"http://127.0.0.1:{port}/v1", name)
    if wait:
        wait_ready(server, ready_timeout)
    return server


def save_test_model(path: str, hidden: int = 128, layers: int = 2, seed: int = 0) -> str:
    """A tiny random Llama that a CPU vLLM serves (head_dim 64), saved to ``path`` with an ASCII-only
    byte-level BPE tokenizer (so every sampled token decodes to whole characters and text round-trips)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .toy import build_tokenizer

    fast = AutoTokenizer.from_pretrained(build_tokenizer(path, vocab_size=400, all_bytes=False))
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(path)  # beside the tokenizer build_tokenizer saved
    return path
