"""``w2s-eval serve`` against real clients: one server (tiny models, CPU, loopback, an API key) started
by a module fixture and stopped by its PID; the ``openai`` client, the stock ``lm_eval`` CLI's
``local-completions`` model, 32 concurrent requests, bad requests, a client that hangs up.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.slow  # processes, servers or training: deselect with -m 'not slow'


KEY = "test-key-123"
METHOD = "cbs:w=2,k=2,l=4"
PROMPTS = [
    "The movie was",
    "I loved the",
    "Hello, world!",
    "This film is a",
    "The actor and the director",
    "We hated it but",
    "A wonderful story of",
    "Here is a movie review from imdb: ",
]


class Served:
    """The module's server (an API key on every route; the served name means METHOD)."""

    def __init__(self, models, root):
        from devtools.serve_process import start_serve

        args = [
            "--strong",
            models["strong"],
            "--tuned",
            models["tuned"],
            "--untuned",
            models["untuned"],
            "--tuned-template",
            "{prompt}",
            "--untuned-template",
            "{prompt}",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--method",
            METHOD,
            "--max-tokens",
            "64",
            "--max-batch-prompts",
            "32",
            "--max-wait-ms",
            "20",
            "--max-request-tokens",
            "4096",
        ]
        self.server = start_serve(args, str(root / "serve.log"), api_key=KEY)
        self.url, self.port, self.proc = self.server.url, self.server.port, self.server.process

    def stop(self):
        self.server.stop()

    def request(self, path, body=None, key=KEY, raw=None):
        """(status, JSON) of a request; ``raw`` bytes are sent as the body as they are."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path):
        return self.request(path)[1]

    def complete(self, **body):
        status, out = self.request("/v1/completions", {"model": METHOD, "max_tokens": 8, **body})
        assert status == 200, out
        return out


@pytest.fixture(scope="module")
def models(toy_dirs, tmp_path_factory):
    """The toy guides, and a strong model whose ASCII tokenizer decodes every token to whole characters (so a
    generated token's text re-encodes to it); the guides read text with another tokenizer."""
    from devtools.vllm_server import save_test_model

    return {**toy_dirs, "strong": save_test_model(str(tmp_path_factory.mktemp("serve_strong") / "strong"))}


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    s = Served(models, tmp_path_factory.mktemp("serve"))
    yield s
    s.stop()
    assert s.proc.poll() is not None


@pytest.fixture(scope="module")
def engine(models):
    from w2s_eval.engine import build_engine

    return build_engine(
        models["strong"], tuned=models["tuned"], untuned=models["untuned"], dtype="float32", device="cpu"
    )


def test_openai_client_completions_equal_the_engine(served, engine):
    import openai

    from w2s_eval.config import SamplingConfig
    from w2s_eval.policy import choice_seed

    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    out = client.completions.create(
        model="cbs:w=2,k=2,l=3",
        prompt=PROMPTS[:2],
        max_tokens=8,
        seed=5,
        n=2,
        temperature=0.8,
        extra_body={"top_k": 20},
    )
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    cfg = SamplingConfig(temperature=0.8, top_k=20, max_new_tokens=8)
    prompts = [p for p in PROMPTS[:2] for _ in range(2)]
    seeds = [choice_seed(5, p, i % 2) for i, p in enumerate(prompts)]
    want = engine.generate(prompts, "cbs:w=2,k=2,l=3", cfg, seeds=seeds)
    assert [c.text for c in out.choices] == [r.text for r in want]
    assert len(set(c.text for c in out.choices)) > 1  # the two choices of a prompt draw differently
    u = out.usage
    assert u.prompt_tokens == sum(len(engine.policy.lm.tokenizer.encode(p)) for p in PROMPTS[:2])
    assert u.completion_tokens == sum(r.beams[0].n_tokens for r in want)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    w2s = u.model_extra["w2s"]
    assert w2s["method"] == "cbs:w=2,k=2,l=3" and w2s["samples"] == sum(r.stats["samples"] for r in want)
    assert w2s["scores"] == pytest.approx([r.score for r in want])
    # the same compute counters as a record's: per model role, tokens and FLOPs, and the total
    assert w2s["flops"] == sum(r.stats["flops"] for r in want) > 0
    for role in ("strong", "tuned", "untuned"):
        for key in ("prefill_tokens", "prefill_flops", "forward_tokens", "forward_flops"):
            assert w2s["compute"][role][key] == sum(r.stats["compute"][role][key] for r in want)
    # the body field `method` picks the method too; `model` then only names the server
    base = client.completions.create(
        model="w2s", prompt=PROMPTS[0], max_tokens=8, seed=5, temperature=0.8, extra_body={"method": "base"}
    )
    assert base.usage.model_extra["w2s"]["method"] == "base"
    want = engine.generate(
        [PROMPTS[0]], "base", SamplingConfig(temperature=0.8, max_new_tokens=8), seeds=[choice_seed(5, PROMPTS[0], 0)]
    )
    assert base.choices[0].text == want[0].text
    assert [m.id for m in client.models.list().data][0] == "w2s"


def test_openai_client_chat_templates_the_messages_and_guides_read_the_last_user_turn(served, engine):
    import openai

    from w2s_eval.config import SamplingConfig
    from w2s_eval.policy import choice_seed

    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell me about the film"}]
    out = client.chat.completions.create(model="bon:n=3", messages=messages, max_tokens=8, seed=2, temperature=1.0)
    prompt = engine.policy.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    want = engine.generate(
        [prompt],
        "bon:n=3",
        SamplingConfig(temperature=1.0, max_new_tokens=8),
        seeds=[choice_seed(2, prompt, 0)],
        guide_prompts=["Tell me about the film"],
    )[0]
    assert out.choices[0].message.content == want.text and out.choices[0].message.role == "assistant"
    assert out.usage.model_extra["w2s"]["scores"] == pytest.approx([want.score])
    # what the guides read matters: scoring the templated prompt instead ranks differently
    other = engine.generate(
        [prompt], "bon:n=3", SamplingConfig(temperature=1.0, max_new_tokens=8), seeds=[choice_seed(2, prompt, 0)]
    )[0]
    assert other.score != pytest.approx(want.score)


def test_32_concurrent_requests_equal_sequential_ones(served):
    bodies = [
        {"prompt": PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)), "seed": i, "temperature": 1.0}
        for i in range(32)
    ]
    before = served.get("/health")
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(lambda b: served.complete(**b), bodies))
    during = served.get("/health")
    alone = [served.complete(**b) for b in bodies]
    assert [o["choices"][0]["text"] for o in together] == [o["choices"][0]["text"] for o in alone]
    assert all(o["choices"][0]["text"] for o in together)
    # the 32 concurrent requests ran as batched search, not one at a time
    assert during["batches"] - before["batches"] < 32 and during["largest_batch"] > 1


BAD = [
    ({"model": "beam:w=2", "prompt": "x"}, 400, "unknown method 'beam'"),
    ({"model": "cbs:w=0,k=2,l=4", "prompt": "x"}, 400, "w must be a positive integer"),
    ({"model": "gpt-4", "prompt": "x"}, 404, "model 'gpt-4' is not served here"),
    ({"model": METHOD}, 400, "prompt: Field required"),
    ({"model": METHOD, "prompt": "x", "max_tokens": 100000}, 400, "over the server's limit of 64"),
    ({"model": METHOD, "prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"model": METHOD, "prompt": "x", "stream": True}, 400, "stream=true is not supported"),
    ({"model": METHOD, "prompt": "x", "max_tokens": 0}, 400, "echo=true"),
    ({"model": "eft:beta=1", "prompt": "x", "method": "cbs:w=1,k=1,l=x"}, 400, "method: cbs: l must be an integer"),
    ({"model": "eft:beta=1", "prompt": "x"}, 400, "cannot run on this server"),  # guides of another vocabulary
    ({"model": METHOD, "prompt": [[1, 2, 10**6]]}, 400, "prompt token ids must lie in"),
    (
        {"model": METHOD, "prompt": "the movie was great " * 150, "max_tokens": 64},
        400,
        "exceeds the strong model's context of 512; shorten the prompt or lower max_tokens (at most",
    ),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[str(b[2])[:30] for b in BAD])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(served, body, status, message):
    got, out = served.request("/v1/completions", body)
    assert got == status and message in out["error"]["message"], out
    assert set(out["error"]) == {"message", "type", "param", "code"}
    assert served.complete(prompt="The movie", seed=1)["choices"][0]["text"] is not None


def test_auth_size_json_and_route_errors(served):
    for key in (None, "wrong"):
        status, out = served.request("/v1/models", key=key)
        assert status == 401 and "API key" in out["error"]["message"]
    assert served.request("/health", key="wrong")[0] == 401  # every route
    status, out = served.request("/v1/completions", raw=b'{"model": "w2s", "prompt": ' + b'"x' * (1 << 20) + b'"}')
    assert status == 413 and "--max-request-bytes" in out["error"]["message"]
    status, out = served.request("/v1/completions", raw=b"{not json")
    assert status == 400 and "not valid JSON" in out["error"]["message"]
    status, out = served.request("/v1/nowhere", {"model": "w2s"})
    assert status == 404 and "/v1/nowhere" in out["error"]["message"]
    status, out = served.request(
        "/v1/chat/completions", {"model": METHOD, "messages": [{"role": "system", "content": "hi"}]}
    )
    assert status == 400 and "no user turn" in out["error"]["message"]


def test_a_client_that_hangs_up_cancels_nothing_else(served):
    body = json.dumps({"model": METHOD, "prompt": PROMPTS[1], "max_tokens": 32, "seed": 9}).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with ThreadPoolExecutor(4) as pool:
        others = [pool.submit(served.complete, prompt=p, seed=3) for p in PROMPTS[:3]]
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", served.port)) as s:
                s.sendall(head + body)  # and hang up before the answer
        texts = [f.result(timeout=120)["choices"][0]["text"] for f in others]
    assert texts == [served.complete(prompt=p, seed=3)["choices"][0]["text"] for p in PROMPTS[:3]]
    assert served.proc.poll() is None and served.get("/health")["status"] == "ok"


OVER = [  # issue 25, item 1: what one request may cost is bounded before anything runs
    (
        {"model": "bon:n=1000000000"},
        "method bon:n=1000000000 draws 1000000000 strong-model samples per prompt; the "
        "server's limit is 64 (--max-samples)",
    ),
    ({"model": "cbs:w=100000,k=100000,l=4"}, "the server's limit is 64 (--max-samples)"),
    ({"model": "w2s", "method": "bon:n=65"}, "(--max-samples)"),
    (
        {"model": "bon:n=32", "max_tokens": 64, "prompt": ["The movie"] * 4},
        "this request may cost 8192 strong-model tokens (32 samples per prompt x max_tokens=64 x n=1 x 4 prompt(s)), "
        "over the server's limit of 4096 (--max-request-tokens)",
    ),
    ({"model": METHOD, "max_tokens": 64, "n": 16, "prompt": ["The movie"] * 2}, "(--max-request-tokens)"),
    ({"model": METHOD, "stop": ["a"] * 50000}, "50000 stop strings; the server's limit is 16 (--max-stop)"),
    (
        {"model": METHOD, "stop": ["x" * 2000]},
        "the stop strings hold 2000 characters; the server's limit is 1024 (--max-stop-chars)",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("body,message", OVER, ids=[m[-24:] for _, m in OVER])
def test_over_budget_requests_are_refused_naming_the_limit_before_anything_runs(served, body, message):
    before = served.get("/health")
    status, out = served.request("/v1/completions", {"prompt": "The movie", "max_tokens": 8, **body})
    assert status == 400 and message in out["error"]["message"], out
    assert out["error"]["code"] == "over_budget"
    after = served.get("/health")
    assert after["prompts"] == before["prompts"] and after["batches"] == before["batches"]
    if "prompt" not in body:  # chat: the same limits
        status, out = served.request(
            "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 8, **body}
        )
        assert status == 400 and message in out["error"]["message"], out


CLIENT_MISTAKES = [  # issue 25, items 7 and 10: 4xx naming the field, never a 500
    (
        "/v1/completions",
        {"prompt": "The movie", "temperature": 1e-320},
        "temperature must be 0 (greedy) or at least",
        None,
    ),
    ("/v1/completions", {"prompt": "The movie \ud800 was"}, "lone surrogate", "prompt"),
    ("/v1/completions", {"prompt": ["ok", "\udfff"]}, "prompt[1] holds '\\udfff'", "prompt"),
    ("/v1/completions", {"prompt": "The movie", "stop": ["\ud800"]}, "stop[0] holds", "stop"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi \ud800"}]},
        "messages[0].content holds '\\ud800'",
        "messages",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
        "messages[0].content[0].text holds",
        "messages",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
        "response_format is not supported",
        "response_format",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]},
        "tools is not supported",
        "tools",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "logprobs": False, "top_logprobs": 2},
        "top_logprobs is not supported",
        "top_logprobs",
    ),
    (
        "/v1/completions",
        {"prompt": "The movie", "guided_json": {"type": "object"}},
        "guided_json is not supported",
        "guided_json",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("path,body,message,param", CLIENT_MISTAKES, ids=[m[2][:28] for m in CLIENT_MISTAKES])
def test_client_mistakes_get_a_400_naming_the_field(served, path, body, message, param):
    raw = json.dumps({"model": METHOD, "max_tokens": 4, **body}).encode()  # a surrogate goes as \\ud800
    status, out = served.request(path, raw=raw)
    assert status == 400 and message in out["error"]["message"], out
    assert out["error"]["param"] == param
    # the no-op values of the refused fields pass
    if path.endswith("chat/completions"):
        ok = {
            "model": METHOD,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [],
            "response_format": {"type": "text"},
            "top_logprobs": None,
            "tool_choice": "none",
        }
        assert served.request(path, ok)[0] == 200


@pytest.mark.slow
def test_a_client_that_hangs_up_has_its_queued_prompts_cancelled(served):
    """Issue 25, item 2: the disconnected client's 64 prompts, queued behind three other requests' batches, do not
    run (at most one batch of them may have started when the hang-up is seen)."""
    before = served.get("/health")
    blockers = [
        {"model": "base", "prompt": [f"{p} {j} {i}" for i, p in enumerate(PROMPTS * 4)], "max_tokens": 64, "seed": 1}
        for j in range(3)
    ]
    body = json.dumps(
        {"model": "base", "prompt": [f"gone {i}" for i in range(64)], "max_tokens": 32, "seed": 2}
    ).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + 60

    def wait(what, until):
        while not until(served.get("/health")):
            assert time.monotonic() < deadline, f"{what} did not happen within 60 s"
            time.sleep(0.005)

    with ThreadPoolExecutor(3) as pool:
        firsts = [pool.submit(served.request, "/v1/completions", b) for b in blockers]
        wait("the first batch", lambda h: h["running"] > 0)
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(head + body)
            wait("queueing", lambda h: h["submitted"] - before["submitted"] == 3 * 32 + 64)
        assert [f.result(timeout=120)[0] for f in firsts] == [200] * 3
    assert served.complete(prompt="after", seed=3)["choices"][0]["text"] is not None  # runs after what was queued
    after = served.get("/health")
    ran = after["prompts"] - before["prompts"] - 3 * 32 - 1
    assert after["disconnected"] - before["disconnected"] == 1
    assert after["cancelled"] - before["cancelled"] >= 32 and ran <= 32, (before, after)


@pytest.mark.slow
def test_a_small_load_loses_and_mixes_nothing(served):
    """Issue 25: 8 clients x 6 requests at ~2/s each (bounded to 60 s), a fifth malformed and some over budget,
    against the loopback server: every request answered with its expected status, each good answer its own prompt
    and seed, and the same text as the request sent again alone. Figures: printed (pytest -s) and in
    docs/reliability.md."""
    from devtools.serve_load import run_load

    result = run_load(
        served.url,
        KEY,
        clients=8,
        requests=6,
        duration_s=60,
        rate=2.0,
        method=METHOD,
        max_tokens=8,
        pid=served.proc.pid,
    )
    print(json.dumps(result.summary()))
    assert result.problems == [] and result.answered == result.sent >= 8, result.summary()
    kinds = {c.split()[0] for c in result.classes}
    assert {"good", "bad", "over"} <= kinds, result.classes
    assert all(c.endswith("over_budget") for c in result.classes if c.startswith("over"))
    for body, text in result.good[:6]:  # alone, the same text: nothing of another request leaked in
        assert served.complete(**body)["choices"][0]["text"] == text


@pytest.fixture(scope="module")
def edge(models, tmp_path_factory):
    """A server with short timeouts and a small connection cap (issue 25, items 3 and 7)."""
    from devtools.serve_process import start_serve

    args = [
        "--strong",
        models["strong"],
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--method",
        "base",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--max-connections",
        "8",
        "--shutdown-timeout",
        "0.5",
        "--keep-alive-timeout",
        "30",
        "--max-wait-ms",
        "20",
        "--max-batch-prompts",
        "4",
    ]
    server = start_serve(args, str(tmp_path_factory.mktemp("edge") / "serve.log"), api_key=KEY)
    yield server
    server.stop()


def _read_all(sock, limit: float) -> tuple:
    """(bytes the server sent until it closed the connection, seconds that took); None for the seconds when it
    was still open after ``limit`` seconds."""
    sock.settimeout(0.2)
    data, t0 = b"", time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - t0
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk
    return data, None


@pytest.mark.slow
def test_stalled_connections_are_closed_and_a_connection_cap_holds(edge):
    """Issue 25, item 3: slow raw-socket clients on loopback, half without a key: a stalled head is closed after
    --header-timeout (408 when part of it came), a stalled body gets a 408 or 401 after --body-timeout, and
    connections over --max-connections get a JSON 503 at once. Each socket is read for at most 10 s."""
    auth = f"Authorization: Bearer {KEY}\r\n"
    stalls = []
    for i in range(8):
        key = auth if i % 2 else ""
        if i < 2:
            stalls.append(b"")  # connects and sends nothing
        elif i < 4:
            stalls.append(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{key}".encode())  # half a head
        else:
            stalls.append(
                (
                    f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{key}Content-Type: application/json\r\n"
                    'Content-Length: 100\r\n\r\n{"model": '
                ).encode()
            )  # a tenth of a body
    socks = []
    try:
        for data in stalls:
            socks.append(socket.create_connection(("127.0.0.1", edge.port)))
            socks[-1].sendall(data)
        time.sleep(0.2)
        over = [socket.create_connection(("127.0.0.1", edge.port)) for _ in range(2)]
        socks += over
        for s in over:
            data, took = _read_all(s, 10)
            assert took is not None and data.startswith(b"HTTP/1.1 503 ") and b"--max-connections" in data, data
        results = [_read_all(s, 10) for s in socks[:8]]
    finally:
        for s in socks:
            s.close()
    assert all(took is not None for _, took in results), results  # every stalled connection was closed
    assert [d for d, _ in results[:2]] == [b"", b""]
    assert all(d.startswith(b"HTTP/1.1 408 ") and b"--header-timeout" in d for d, _ in results[2:4]), results
    bodies = [d for d, _ in results[4:]]
    assert [d.split(b" ")[1] for d in bodies] == [b"401", b"408", b"401", b"408"], bodies
    assert all(b"--body-timeout" in d for d in bodies[1::2])
    assert json.loads(bodies[1].split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    # the server serves on
    req = urllib.request.Request(
        edge.url + "/v1/completions",
        data=json.dumps({"model": "base", "prompt": "The movie", "max_tokens": 4}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


@pytest.mark.slow
def test_shutdown_answers_requests_in_flight_with_json_503(edge):
    """Issue 25, item 7: SIGTERM with requests in flight; those not done within --shutdown-timeout get OpenAI's
    error JSON with status 503 (not uvicorn's plain 500), and the server exits."""
    body = json.dumps(
        {"model": "base", "prompt": [f"{p} {i}" for i, p in enumerate(PROMPTS * 4)], "max_tokens": 64}
    ).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    answers = []

    def send():
        req = urllib.request.Request(edge.url + "/v1/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                answers.append((r.status, r.headers.get("content-type"), r.read()))
        except urllib.error.HTTPError as e:
            answers.append((e.code, e.headers.get("content-type"), e.read()))

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while edge.health()["queued"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    edge.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    assert edge.process.wait(timeout=60) is not None
    assert len(answers) == 3 and {a[0] for a in answers} <= {200, 503} and 503 in {a[0] for a in answers}, answers
    for status, kind, raw in answers:
        if status == 503:
            assert kind == "application/json"
            assert json.loads(raw)["error"]["code"] == "server_shutting_down"


@pytest.fixture(scope="module")
def lm_eval_runs(served, models, tmp_path_factory):
    """The same tiny generate and multiple-choice tasks through ``lm_eval --model w2s`` and through the stock
    ``local-completions`` model pointed at the server (whose served name means METHOD; lm-eval splits
    model_args at commas, so the method goes by the served name)."""
    from test_lm_eval_helpers import LM_EVAL_SCRIPT, env, write_tasks

    root = tmp_path_factory.mktemp("serve_lm_eval")
    tasks, t = write_tasks(root), models
    common = [
        "--tasks",
        "t_gen,t_mc",
        "--include_path",
        str(tasks),
        "--limit",
        "4",
        "--log_samples",
        "--gen_kwargs",
        "do_sample=True,temperature=0.7,max_gen_toks=10",
    ]
    w2s_args = (
        f"strong={t['strong']},tuned={t['tuned']},untuned={t['untuned']},method=cbs,w=2,k=2,l=4,seed=1234,"
        "dtype=float32,device=cpu"
    )
    api_args = (
        f"base_url={served.url}/v1/completions,model=w2s,tokenizer={t['strong']},"
        "tokenizer_backend=huggingface,max_retries=1,num_concurrent=4"
    )
    cmds = [
        [
            sys.executable,
            "-m",
            "w2s_eval.lm_eval_backend",
            "--model",
            "w2s",
            "--model_args",
            w2s_args,
            "--batch_size",
            "4",
            "--output_path",
            str(root / "w2s"),
            *common,
        ],
        [
            str(LM_EVAL_SCRIPT),
            "--model",
            "local-completions",
            "--model_args",
            api_args,
            "--output_path",
            str(root / "api"),
            *common,
        ],
    ]
    procs = [
        subprocess.Popen(
            c, cwd=root, env=env({"OPENAI_API_KEY": KEY}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for c in cmds
    ]  # both at once: half the wait
    for c, p in zip(cmds, procs):
        log = p.communicate(timeout=600)[0]
        assert p.returncode == 0, f"{' '.join(c)} failed:\n{log[-6000:]}"
    return root


def test_lm_eval_local_completions_generates_what_lm_eval_w2s_generates(lm_eval_runs):
    from test_lm_eval_helpers import samples

    w2s, api = samples(lm_eval_runs / "w2s", "t_gen"), samples(lm_eval_runs / "api", "t_gen")
    assert sorted(w2s) == sorted(api) == [0, 1, 2, 3]
    assert [api[i]["resps"][0][0] for i in api] == [w2s[i]["resps"][0][0] for i in api]
    assert any(w2s[i]["resps"][0][0] for i in w2s)


def test_lm_eval_local_completions_loglikelihoods_equal_lm_eval_w2s(lm_eval_runs):
    """Tilted log-likelihoods: the server spreads them over tokens so lm-eval's own suffix sums equal the
    backend's value for every context/continuation split."""
    from test_lm_eval_helpers import samples

    w2s, api = samples(lm_eval_runs / "w2s", "t_mc"), samples(lm_eval_runs / "api", "t_mc")
    assert sorted(w2s) == sorted(api) == [0, 1, 2, 3]
    for i in w2s:
        want = [float(r[0][0]) for r in w2s[i]["resps"]]
        got = [float(r[0][0]) for r in api[i]["resps"]]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-5)
        assert [r[0][1] for r in api[i]["resps"]] == [r[0][1] for r in w2s[i]["resps"]]  # is_greedy


def test_echo_logprobs_suffix_sums_are_the_tilted_loglikelihood_of_every_split(served, engine):
    import torch

    from w2s_eval.config import parse_method
    from w2s_eval.tilt import Tilt, terms_for

    tok, text = engine.policy.lm.tokenizer, "The movie was great and the story was sad"
    ids = tok.encode(text)
    with torch.no_grad():
        logp = torch.log_softmax(engine.policy.lm.model(torch.tensor([ids])).logits[0].double(), -1)
    own = [None] + [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    tilt = Tilt(terms_for(engine, parse_method(METHOD)), 1)
    for model, tilted in (("base", False), (METHOD, True)):
        out = served.complete(model=model, prompt=text, max_tokens=0, echo=True, logprobs=2)
        choice = out["choices"][0]
        lp = choice["logprobs"]
        assert choice["text"] == text and lp["tokens"] == [tok.decode([t]) for t in ids]
        assert lp["token_logprobs"][0] is None
        assert out["usage"]["prompt_tokens"] == len(ids) and out["usage"]["completion_tokens"] == 0
        for j in range(1, len(ids)):
            want = sum(own[j:])
            if tilted:
                want += tilt([(tok.decode(ids[:j]), tok.decode(ids[j:]))])[0]
            assert sum(lp["token_logprobs"][j:]) == pytest.approx(want, rel=1e-5, abs=1e-4)
            greedy = logp[j - 1].argmax().item() == ids[j]
            assert (lp["token_logprobs"][j] == max(lp["top_logprobs"][j].values())) == greedy
    # with a completion: the prompt's entries, then one per generated token
    out = served.complete(model="base", prompt=text, max_tokens=3, echo=True, logprobs=1, temperature=0)
    lp, gen = out["choices"][0]["logprobs"], out["choices"][0]["text"][len(text) :]
    assert len(lp["token_logprobs"]) == len(ids) + out["usage"]["completion_tokens"]
    assert "".join(lp["tokens"]) == text + gen and lp["text_offset"][len(ids)] == len(text)
