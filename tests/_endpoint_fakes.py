"""Loopback test servers for the endpoint tests: a small fake OpenAI completions server
with deterministic sampling, and a forwarding proxy; both inject faults on demand.

Fault actions (consumed one per request, in order): an int HTTP status (500, 429, 400, ...),
"drop" (close the connection without an answer), "short" (one choice too few).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = [" good", " bad", " movie", " fun", " plot", " ok", " .", " XY", " great", " film"]  # one token each
EOS_P = 0.08


def fake_tokens(text: str) -> list[str]:
    """How the fake server tokenizes: runs of spaces + non-space characters."""
    return re.findall(r"\s*\S+|\s+$", text)


def fake_logprob(token: str) -> float:
    return -0.2 * len(token.strip())


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, payload: dict, headers=None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _fault(self):
        with self.server.lock:
            self.server.seen += 1
            return self.server.faults.pop(0) if self.server.faults else None

    def do_GET(self):
        fault = self._fault()
        if isinstance(fault, int):
            return self._reply(fault, {"error": {"message": f"injected {fault}"}})
        self.server.get(self)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        owner = self.server.owner
        with self.server.lock:
            owner.posts += 1
            dying = owner.kill_after is not None and owner.posts > owner.kill_after
        if dying:  # the server crashes: this request gets no answer, later ones no connection
            owner.stopping = threading.Thread(target=owner.stop, daemon=True)
            owner.stopping.start()
            self.close_connection = True
            return
        fault = self._fault()
        if fault == "drop":
            self.close_connection = True
            return
        if isinstance(fault, int):
            headers = {"Retry-After": "0"} if fault == 429 else None
            return self._reply(fault, {"error": {"message": f"injected {fault}", "code": fault}}, headers)
        with self.server.lock:
            self.server.inflight += 1
            self.server.max_inflight = max(self.server.max_inflight, self.server.inflight)
        try:
            if self.server.delay:
                time.sleep(self.server.delay)
            status, payload = self.server.post(self, body)
        finally:
            with self.server.lock:
                self.server.inflight -= 1
        if fault == "short" and payload.get("choices"):
            payload["choices"] = payload["choices"][:-1]
        self.server.bodies.append(body)
        self._reply(status, payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.faults: list = []
        self.bodies: list[dict] = []
        self.seen = 0
        self.inflight = self.max_inflight = 0
        self.delay = 0.0


class _Loopback:
    """A server in a thread on 127.0.0.1; ``stop()`` then ``start()`` again on the same port."""

    def __init__(self, port: int = 0, kill_after=None):
        self.port = port
        self.httpd = None
        self.kill_after = kill_after  # POSTs answered before the server "crashes" (stops itself)
        self.posts = 0
        self.stopping = None  # the thread of a crash's stop(), which a restart waits for

    def start(self):
        if self.stopping is not None:  # a crash is still stopping the old server: let it finish first, or it
            self.stopping.join()  # would stop this new one (stop() takes whatever server is current)
            self.stopping = None
        self.httpd = _Server(self.port)
        self.httpd.get, self.httpd.post, self.httpd.owner = self.get, self.post, self
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __getattr__(self, name):  # faults, bodies, max_inflight, delay ...
        if name in ("faults", "bodies", "seen", "max_inflight", "delay"):
            return getattr(self.httpd, name)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in ("faults", "delay"):
            setattr(self.httpd, name, value)
        else:
            super().__setattr__(name, value)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FakeOpenAIServer(_Loopback):
    """``/v1/completions`` with n, max_tokens, temperature, seed, stop, logprobs, echo; ``/v1/models``.

    Sampling: one word of WORDS per token, EOS with probability EOS_P, from a random stream
    seeded by (prompt, seed, choice index); temperature 0 uses one stream for all choices.
    ``kill_after``: the server stops itself after that many POSTs (a crash mid-run).
    """

    def __init__(self, port: int = 0, model: str = "fake", kill_after=None, token_ids: bool = False):
        super().__init__(port, kill_after)
        self.model = model
        self.token_ids = token_ids  # answer return_token_ids as vLLM does (EOS id 0 included)
        self.vocab = {"": 0}
        self.words: list[str] = [""]

    def ids(self, tokens: list[str]) -> list[int]:
        for t in tokens:
            if t not in self.vocab:
                self.vocab[t] = len(self.words)
                self.words.append(t)
        return [self.vocab[t] for t in tokens]

    def get(self, h):
        if h.path.rstrip("/").endswith("/models"):
            return h._reply(
                200,
                {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test", "created": 0}]},
            )
        h._reply(404, {"error": {"message": "not found"}})

    def post(self, h, body):
        if not h.path.rstrip("/").endswith("/completions"):
            return 404, {"error": {"message": "not found"}}
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        prompt = body["prompt"]
        if isinstance(prompt, list):  # token ids
            if not self.token_ids:
                return 400, {"error": {"message": "token id prompts are not supported"}}
            prompt = "".join(self.words[i] for i in prompt)
            body = dict(body, prompt=prompt)
        if body.get("temperature") == 0 and body.get("n", 1) > 1:  # as vLLM
            return 400, {"error": {"message": f"n must be 1 when using greedy sampling, got {body['n']}."}}
        p_tokens = fake_tokens(prompt)
        choices, generated = [], 0
        if body.get("echo") and body.get("max_tokens") == 0:
            offsets, pos = [], 0
            for t in p_tokens:
                offsets.append(pos)
                pos += len(t)
            lps = [None] + [fake_logprob(t) for t in p_tokens[1:]]
            tops = [None] + [{t: fake_logprob(t), " zz": -0.5} for t in p_tokens[1:]]
            # like vLLM, an extra entry past the text (the generated token of max_tokens=0)
            choices.append(
                {
                    "index": 0,
                    "text": prompt,
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": p_tokens + [""],
                        "text_offset": offsets + [len(prompt) + 1],
                        "token_logprobs": lps + [-1.0],
                        "top_logprobs": tops + [{"": -1.0}],
                    },
                }
            )
            generated = 1
        else:
            for i in range(body.get("n", 1)):
                choice, n_gen = self._sample(body, i)
                if self.token_ids and body.get("return_token_ids"):
                    choice["prompt_token_ids"] = self.ids(p_tokens)
                    choice["token_ids"] = self.ids(choice.pop("_tokens"))
                choice.pop("_tokens", None)
                choices.append(choice)
                generated += n_gen
        usage = {
            "prompt_tokens": len(p_tokens),
            "completion_tokens": generated,
            "total_tokens": len(p_tokens) + generated,
        }
        return 200, {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def _sample(self, body, i):
        greedy = body.get("temperature", 1.0) == 0
        rng = random.Random(f"{body['prompt']}|{body.get('seed')}|{0 if greedy else i}")
        stops = body.get("stop") or []
        text, tokens, offsets, reason, stop_reason = "", [], [], "length", None
        for _ in range(body["max_tokens"]):
            if rng.random() < EOS_P:
                tokens.append("")
                offsets.append(len(text))
                reason = "stop"
                break
            word = WORDS[rng.randrange(len(WORDS))]
            offsets.append(len(text))
            tokens.append(word)
            text += word
            hit = [s for s in stops if s in text]
            if hit:
                text = text[: min(text.find(s) for s in hit)]
                reason, stop_reason = "stop", hit[0]
                break
        lp = None
        if body.get("logprobs") is not None:
            lp = {
                "tokens": tokens,
                "text_offset": offsets,
                "token_logprobs": [fake_logprob(t) for t in tokens],
                "top_logprobs": None,
            }
        return {
            "index": i,
            "text": text,
            "finish_reason": reason,
            "stop_reason": stop_reason,
            "logprobs": lp,
            "_tokens": list(tokens),
        }, len(tokens)


class FaultProxy(_Loopback):
    """Forwards requests to ``target`` (a ``/v1`` URL) and injects faults first."""

    def __init__(self, target: str, port: int = 0, kill_after=None):
        super().__init__(port, kill_after)
        self.target = target.rstrip("/")

    def _forward(self, h, method: str, data=None):
        url = self.target + h.path[len("/v1") :] if h.path.startswith("/v1") else self.target + h.path
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, h):
        status, payload = self._forward(h, "GET")
        h._reply(status, payload)

    def post(self, h, body):
        return self._forward(h, "POST", json.dumps(body).encode())


def recording_policy(policy, rounds: list):
    """``policy`` whose sessions append (parents, children) of every ``extend`` call to ``rounds``."""

    class Recording:
        name = policy.name

        def start(self, prompts, cfg, seeds):
            inner = policy.start(prompts, cfg, seeds)

            class Session:
                strong_tokens = property(lambda self: inner.strong_tokens)
                guide_tokens = property(lambda self: inner.guide_tokens)

                def extend(self, parents, k, max_tokens):
                    kids = inner.extend(parents, k, max_tokens)
                    rounds.append((list(parents), kids))
                    return kids

            return Session()

    return Recording()
