"""Schema fuzzing of ``w2s-eval serve`` (issue 25): hypothesis draws request bodies, well-formed and not (wrong
types, huge and subnormal numbers, NaN, lone surrogates, unknown and unsupported fields, nested junk, raw
bytes), and sends them through the whole app (guard, FastAPI, validation, the batcher and the toy engine) with an
in-process HTTP client. Every answer must be JSON: 200 with one choice per prompt and n, or OpenAI's error object
with a 4xx status; never a 500, never a traceback. Small limits keep the valid requests cheap; derandomized, so
CI draws the same examples every run."""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEY = "fuzz-key"
EXAMPLES = 40
_FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _mostly(valid, bad=_junk):
    """``valid`` nine times in ten, else ``bad`` (so most requests get past the schema and reach the engine)."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 5 else valid)  # (hypothesis favours 0 and 9)


_text = _mostly(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24)
    | st.sampled_from(["The movie was", "😀 film", "x" * 300]),
    st.sampled_from(["\ud800", "a\udfffb", ""]),
)
_model = _mostly(
    st.sampled_from(["w2s", "base", "bon:n=2", "cbs:w=2,k=2,l=2", "cbs:w=1,k=2,l=inf", "bon:n=02", "eft:beta=1"]),
    st.sampled_from(
        ["bon:n=1000000000", "cbs:w=100000,k=100000", "beam:w=2", "gpt-4", "bon:n=-1", "cbs:w=1,k=1,l=-inf", "base:x=1"]
    )
    | st.text(max_size=12)
    | _junk,
)


_FIELDS = {
    "max_tokens": _mostly(st.integers(0, 6), st.sampled_from([-1, 2**31, 2**63, 10**30, 1.5, "4"])),
    "temperature": _mostly(
        st.sampled_from([0.0, 0.7, 1.0, 2.0]) | st.floats(1e-4, 5),
        st.sampled_from([1e-320, 5e-324, 1e-5, 1e308, -1.0]) | st.floats(),
    ),
    "top_p": _mostly(st.floats(0.01, 1.0), st.floats()),
    "top_k": _mostly(st.integers(-1, 60)),
    "n": _mostly(st.integers(1, 3)),
    "seed": _mostly(st.integers(0, 2**63 - 1)),
    "stop": _mostly(_text | st.lists(_text, max_size=6)),
    "echo": _mostly(st.booleans()),
    "logprobs": _mostly(st.integers(0, 3) | st.booleans()),
    "stream": _mostly(st.just(False), st.just(True)),
    "method": _model,
    "best_of": _mostly(st.just(1), st.integers(2, 3)),
    "response_format": _mostly(st.just({"type": "text"}), st.just({"type": "json_object"})),
    "tools": _mostly(st.just([]), _junk),
    "top_logprobs": _mostly(st.none(), st.integers(1, 5)),
    "logit_bias": _mostly(st.just({}), _junk),
}


def _body(main):
    """A request: ``model``, ``main`` (the prompt or the messages), some of the other fields, maybe an unknown one."""
    head = st.fixed_dictionaries({"model": _model}, optional=_FIELDS)
    extra = st.dictionaries(st.text(max_size=6), _junk, max_size=1)
    return st.tuples(extra, head, main).map(lambda parts: {**parts[0], **parts[1], **parts[2]})


_prompt = _mostly(
    st.fixed_dictionaries(
        {
            "prompt": _text
            | st.lists(_text, min_size=1, max_size=4)
            | st.lists(st.integers(0, 600), min_size=1, max_size=6)
            | st.lists(st.lists(st.integers(0, 600), min_size=1, max_size=4), min_size=1, max_size=3)
        }
    ),
    st.dictionaries(st.just("prompt"), _junk, max_size=1),
)
_content = _mostly(
    _text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _text}), max_size=2),
    _junk | st.lists(st.fixed_dictionaries({"type": st.just("image_url"), "text": _text}), min_size=1, max_size=1),
)
_message = st.fixed_dictionaries(
    {"role": _mostly(st.sampled_from(["user", "system", "assistant"]), st.just("robot")), "content": _content}
)
_messages = _mostly(
    st.fixed_dictionaries({"messages": st.lists(_message, min_size=1, max_size=3)}),
    st.dictionaries(st.just("messages"), _junk, max_size=1),
)


@pytest.fixture(scope="module")
def client(toy_dirs):
    from starlette.testclient import TestClient

    from w2s_eval.config import parse_method
    from w2s_eval.engine import build_engine
    from w2s_eval.serve import Limits, ServeConfig, create_app

    engine = build_engine(
        toy_dirs["strong"], tuned=toy_dirs["tuned"], untuned=toy_dirs["untuned"], dtype="float32", device="cpu"
    )
    cfg = ServeConfig(
        api_key=KEY,
        max_request_bytes=1 << 16,
        max_wait_ms=0.0,
        limits=Limits(
            max_tokens=16,
            max_n=2,
            max_prompts=4,
            default_chat_tokens=4,
            max_samples=4,
            max_request_tokens=128,
            max_stop=4,
            max_stop_chars=64,
        ),
    )
    app = create_app(engine, cfg, parse_method("base"))
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


def _check(response, body) -> dict:
    assert response.status_code in (200, 400, 404, 413), (response.status_code, response.text[:300], body)
    out = response.json()  # always JSON
    event(f"status {response.status_code} {out.get('error', {}).get('message', '')[:60]}")
    if response.status_code == 200:
        return out
    assert set(out["error"]) == {"message", "type", "param", "code"}, out
    assert "Traceback" not in out["error"]["message"] and out["error"]["type"] != "server_error", out
    return out


def _post(client, path, body):
    data = json.dumps(body, allow_nan=True)  # NaN/Infinity as Python's json writes them: the server must cope
    return client.post(
        path,
        content=data.encode("utf-8", "surrogatepass"),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )


@_FUZZ
@given(body=_body(_prompt))
def test_completions_answer_json_never_500(client, body):
    out = _check(_post(client, "/v1/completions", body), body)
    if "choices" in out:
        assert out["usage"]["w2s"]["method"] is not None
        prompt = body["prompt"]
        n_prompts = 1 if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else len(prompt)
        assert len(out["choices"]) == n_prompts * body.get("n", 1)


@_FUZZ
@given(body=_body(_messages))
def test_chat_completions_answer_json_never_500(client, body):
    out = _check(_post(client, "/v1/chat/completions", body), body)
    if "choices" in out:
        assert len(out["choices"]) == body.get("n", 1)
        assert all(c["message"]["role"] == "assistant" for c in out["choices"])


@settings(_FUZZ, max_examples=EXAMPLES // 2)
@given(
    raw=st.binary(max_size=64) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/models", "/nowhere"]),
)
def test_raw_bytes_answer_json_never_500(client, raw, path):
    response = client.post(path, content=raw, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code in (400, 404, 405, 413), (response.status_code, response.text[:300], raw)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
