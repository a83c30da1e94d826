"""``python -m devtools.vllm_cli start|stop``: a loopback vLLM server for
tests and benchmarks; see :mod:`devtools.vllm_server`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from .vllm_server import start_vllm, stop_pid


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.vllm_cli", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a loopback vLLM server and wait until it is ready")
    s.add_argument("--model", required=True, help="local model directory")
    s.add_argument("--name", default="strong", help="served model name (use it as strong_model)")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--max-model-len", type=int, default=1024)
    s.add_argument("--dtype", default="float32")
    s.add_argument("--pid-file", required=True)
    s.add_argument("--log", default=None)
    s.add_argument("--timeout", type=float, default=300.0)
    s.add_argument("extra", nargs="*", help="more vLLM arguments, after --")
    t = sub.add_parser("stop", help="stop the server whose PID is in --pid-file")
    t.add_argument("--pid-file", required=True)
    args = p.parse_args(argv)
    if args.cmd == "start":
        server = start_vllm(
            args.model,
            args.name,
            args.port,
            max_model_len=args.max_model_len,
            dtype=args.dtype,
            log_path=args.log,
            extra_args=args.extra,
            ready_timeout=args.timeout,
        )
        with open(args.pid_file, "w") as f:
            f.write(str(server.pid))
        print(
            json.dumps(
                {
                    "base_url": server.base_url,
                    "model": server.model,
                    "pid": server.pid,
                    "log": server.log_path,
                    "ready_s": round(server.started_s, 1),
                }
            )
        )
        return 0
    with open(args.pid_file) as f:
        stop_pid(int(f.read().strip()))
    os.remove(args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
