"""A small load test of ``w2s-eval serve`` on loopback: N clients at a steady rate, a share of bad and
over-budget requests, bounded in count and in time (each client stops after its requests or at the deadline).

Reports latency percentiles, answers by class (status and error code), the server's RSS before and after, and
checks that nothing is lost (every request answered) or mixed up (each good answer echoes its own prompt and
seed). ``tests/test_serve.py`` runs it at a small size; ``python -m devtools.serve_load`` starts a toy server
and runs it at any size (figures in docs/reliability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["LoadResult", "run_load", "rss_kb"]


def rss_kb(pid: int, key: str = "VmRSS") -> Optional[int]:
    """The resident memory (kB) of process ``pid`` (``VmHWM``: its peak) from /proc; None where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    latencies: dict = field(default_factory=dict)  # {kind: [seconds]}
    classes: dict = field(default_factory=dict)  # {"kind status code": count}
    problems: list = field(default_factory=list)  # lost or mixed-up answers, wrong statuses
    good: list = field(default_factory=list)  # (body, text) of the good requests, to compare with a rerun
    wall_s: float = 0.0
    rss_kb: dict = field(default_factory=dict)

    def percentiles(self, kind: Optional[str] = None) -> dict:
        values = sorted(v for k, vs in self.latencies.items() if kind in (None, k) for v in vs)
        if not values:
            return {}
        pick = {p: values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] for p in (50, 90, 99)}
        return {f"p{p}_ms": round(1000 * v, 1) for p, v in pick.items()} | {"max_ms": round(1000 * values[-1], 1)}

    def summary(self) -> dict:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "wall_s": round(self.wall_s, 2),
            "requests_per_s": round(self.answered / self.wall_s, 2) if self.wall_s else None,
            "latency_all": self.percentiles(),
            "latency_good": self.percentiles("good"),
            "classes": dict(sorted(self.classes.items())),
            "problems": self.problems[:10],
            "rss_kb": self.rss_kb,
        }


def _request(kind: str, client: int, i: int, method: str, max_tokens: int) -> tuple:
    """(body bytes, JSON body or None, expected status) of one request of ``kind``."""
    if kind == "good":
        body = {
            "model": method,
            "prompt": f"Review {client}-{i}: the film was",
            "max_tokens": max_tokens,
            "seed": 1000 * client + i,
            "echo": True,
            "temperature": 1.0,
        }
        return json.dumps(body).encode(), body, 200
    if kind == "over":
        body = {"model": "bon:n=100000", "prompt": "The movie", "max_tokens": max_tokens}
        return json.dumps(body).encode(), body, 400
    bad = [
        b"{not json",
        json.dumps({"model": "beam:w=2", "prompt": "x"}).encode(),
        json.dumps({"model": method, "prompt": "x", "temperature": -1}).encode(),
        json.dumps({"model": method, "prompt": "x", "response_format": {"type": "json_object"}}).encode(),
    ]
    return bad[i % len(bad)], None, 400


async def _client(
    http,
    url: str,
    key: Optional[str],
    client: int,
    n: int,
    deadline: float,
    interval: float,
    shares: tuple,
    method: str,
    max_tokens: int,
    out: LoadResult,
) -> None:
    rng = random.Random(client)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    for i in range(n):
        if time.monotonic() >= deadline:
            return
        u = rng.random()
        kind = "bad" if u < shares[0] else ("over" if u < shares[0] + shares[1] else "good")
        raw, body, want = _request(kind, client, i, method, max_tokens)
        out.sent += 1
        t0 = time.monotonic()
        try:
            r = await http.post(
                url + "/v1/completions", content=raw, headers=headers, timeout=max(deadline - t0, 1.0) + 60
            )
        except Exception as e:  # noqa: BLE001 (a lost request is a finding, not a crash of the test)
            out.problems.append(f"{kind} request {client}-{i} lost: {type(e).__name__}: {e}")
            continue
        elapsed = time.monotonic() - t0
        out.answered += 1
        out.latencies.setdefault(kind, []).append(elapsed)
        try:
            doc = r.json()
        except ValueError:
            doc = {}
        code = (doc.get("error") or {}).get("code") if isinstance(doc, dict) else None
        out.classes[f"{kind} {r.status_code}" + (f" {code}" if code else "")] = (
            out.classes.get(f"{kind} {r.status_code}" + (f" {code}" if code else ""), 0) + 1
        )
        if r.status_code != want:
            out.problems.append(f"{kind} request {client}-{i}: status {r.status_code}, wanted {want}: {r.text[:200]}")
        elif kind == "good":
            text = doc["choices"][0]["text"]
            if not text.startswith(body["prompt"]) or doc["usage"]["w2s"]["seed"] != body["seed"]:
                out.problems.append(f"good request {client}-{i} got another request's answer: {text[:80]!r}")
            out.good.append((body, text))
        await asyncio.sleep(max(0.0, interval - elapsed) * (0.5 + rng.random()))


async def _run(url, key, clients, requests, duration_s, rate, shares, method, max_tokens, out) -> None:
    import httpx

    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(
            *(
                _client(http, url, key, c, requests, deadline, 1.0 / rate, shares, method, max_tokens, out)
                for c in range(clients)
            )
        )


def run_load(
    url: str,
    key: Optional[str] = None,
    clients: int = 8,
    requests: int = 6,
    duration_s: float = 60.0,
    rate: float = 2.0,
    bad_share: float = 0.2,
    over_share: float = 0.15,
    method: str = "base",
    max_tokens: int = 8,
    pid: Optional[int] = None,
) -> LoadResult:
    """Run ``clients`` clients against the server at ``url`` (loopback), each sending at most ``requests``
    completions at about ``rate`` per second until ``duration_s`` has passed; ``bad_share`` of them malformed,
    ``over_share`` over the server's budget. ``pid``: the server's process, for its RSS."""
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ValueError(f"the load test runs against a loopback server only, not {url}")
    out = LoadResult()
    if pid is not None:
        out.rss_kb["before"] = rss_kb(pid)
    t0 = time.monotonic()
    asyncio.run(_run(url, key, clients, requests, duration_s, rate, (bad_share, over_share), method, max_tokens, out))
    out.wall_s = time.monotonic() - t0
    if pid is not None:
        out.rss_kb.update(after=rss_kb(pid), peak=rss_kb(pid, "VmHWM"))
    return out


def main(argv=None) -> int:
    """Start a toy server (tiny random models, CPU, one thread) and run the load test against it."""
    import os
    import tempfile

    from .serve_process import start_serve
    from .toy import build_causal_lm, build_tokenizer
    from .vllm_server import save_test_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=25, help="per client")
    p.add_argument("--duration", type=float, default=120.0, help="seconds at most")
    p.add_argument("--rate", type=float, default=2.0, help="requests per second per client")
    p.add_argument("--method", default="cbs:w=2,k=2,l=4")
    p.add_argument("--max-tokens", type=int, default=8)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(os.path.join(tmp, "tok"))
        guides = [build_causal_lm(os.path.join(tmp, name), tok, seed=i) for i, name in enumerate(("tuned", "untuned"))]
        strong = save_test_model(os.path.join(tmp, "strong"))
        server = start_serve(
            [
                "--strong",
                strong,
                "--tuned",
                guides[0],
                "--untuned",
                guides[1],
                "--tuned-template",
                "{prompt}",
                "--untuned-template",
                "{prompt}",
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--method",
                args.method,
            ],
            os.path.join(tmp, "serve.log"),
            api_key="load-key",
        )
        try:
            result = run_load(
                server.url,
                "load-key",
                args.clients,
                args.requests,
                args.duration,
                args.rate,
                method=args.method,
                max_tokens=args.max_tokens,
                pid=server.process.pid,
            )
        finally:
            server.stop()
    print(json.dumps(result.summary(), indent=1))
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
