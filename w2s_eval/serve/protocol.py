"""The OpenAI request shapes the server accepts (pydantic), its error type, and method choice.

Requests are validated here, before anything reaches the engine: a bad field becomes an
:class:`APIError` (OpenAI's error JSON, status 4xx) that names the field. Fields OpenAI (or
vLLM) defines but search cannot honour (``stream``, penalties, ``logit_bias``, ``best_of``,
``response_format``, ``tools``, ``top_logprobs``, ...) are refused with a message saying what to
use instead; other unknown fields are ignored, as vLLM does. Text that is not valid Unicode (a
lone surrogate such as ``"\ud800"``) is refused naming its field. :class:`Limits` bounds what one
request may cost (:meth:`Limits.check_cost`: strong-model samples per prompt x max_tokens x
choices x prompts) and its stop list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..checks import SpecError, check_number, check_positive_int, spelled
from ..config import METHOD_NAMES, Method, SamplingConfig, parse_method

__all__ = [
    "APIError",
    "CompletionRequest",
    "ChatRequest",
    "ChatMessage",
    "Limits",
    "ServeConfig",
    "resolve_method",
    "error_body",
]


class APIError(Exception):
    """A client error answered with OpenAI's error JSON: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: Optional[str] = None,
        type: str = "invalid_request_error",
        code: Optional[str] = None,
    ):
        super().__init__(message)
        self.message, self.status, self.param, self.type, self.code = message, status, param, type, code


def error_body(
    message: str, type: str = "invalid_request_error", param: Optional[str] = None, code: Optional[str] = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_CORE = SamplingConfig()  # the core's sampling defaults: the request fields default to them


# OpenAI/vLLM fields that would change the response but that search does not honour: refused when set to
# anything but their no-op value ({field: what to do instead}); other unknown fields are ignored
_UNSUPPORTED = {
    "response_format": "structured output is not supported; ask for the format in the prompt",
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "top_logprobs": "logprobs are not supported here; score text with /v1/completions (echo=true, logprobs=N)",
    "stream_options": "streaming is not supported",
    "audio": "only text is supported",
    "modalities": "only text is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "reasoning settings are not supported",
    "web_search_options": "web search is not supported",
    "min_tokens": "min_tokens is not supported",
    "min_p": "min_p is not supported; use top_p or top_k",
    "repetition_penalty": "penalties are not supported (the strong model samples as HF generate does)",
    "length_penalty": "penalties are not supported",
    "ignore_eos": "ignore_eos is not supported",
    "bad_words": "bad_words is not supported",
    "allowed_token_ids": "allowed_token_ids is not supported",
    "guided_json": "guided decoding is not supported",
    "guided_regex": "guided decoding is not supported",
    "guided_choice": "guided decoding is not supported",
    "guided_grammar": "guided decoding is not supported",
    "structured_outputs": "structured output is not supported",
}
_NO_OP = (None, False, 0, "", [], {}, {"type": "text"}, "none", "auto")


def _check_text(value: Any, where: str) -> None:
    """Refuse a string inside ``value`` that is not valid Unicode (a lone surrogate: JSON allows ``"\\ud800"``,
    UTF-8 cannot hold it), naming where it is (``messages[0].content``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            param = re.split(r"[.\[]", where)[0]
            raise APIError(
                f"{where} holds {value[e.start : e.end]!a} at character {e.start}, a lone surrogate that "
                "is not valid Unicode text; send well-formed text",
                param=param,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_text(item, f"{where}[{i}]")
    elif isinstance(value, BaseModel):
        for key, item in value:
            _check_text(item, f"{where}.{key}")


class _Sampling(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="allow")  # extras are kept only to refuse the unsupported ones by name

    model: str = Field(min_length=1)
    method: Optional[str] = Field(None, description="w2s extension: the method spec, overriding `model`")
    temperature: float = Field(_CORE.temperature, ge=0)
    top_p: float = Field(_CORE.top_p, gt=0, le=1)
    top_k: int = Field(_CORE.top_k, ge=-1, description="vLLM extension; 0 or -1 disable it")
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    n: int = Field(1, ge=1)
    stream: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict] = None
    user: Optional[str] = None

    def refuse_unsupported(self) -> None:
        for name, value in (self.model_extra or {}).items():
            if name in _UNSUPPORTED and not any(value == v and type(value) is type(v) for v in _NO_OP):
                raise APIError(f"{name} is not supported: {_UNSUPPORTED[name]}; omit it", param=name)
        for name, value in self:
            _check_text(value, name)
        if self.stream:
            raise APIError(
                "stream=true is not supported: search returns whole responses; send stream=false", param="stream"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(
                    f"{name} is not supported (the strong model samples as HF generate does); omit it or send 0",
                    param=name,
                )
        if self.logit_bias:
            raise APIError("logit_bias is not supported; omit it", param="logit_bias")

    @property
    def tokens_param(self) -> str:
        """The request field that set the number of new tokens (named in errors)."""
        return "max_tokens"

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise APIError("stop must hold non-empty strings", param="stop")
        return tuple(stop)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: a prompt (string, list of strings, token ids, or lists of token ids)."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    best_of: Optional[int] = None
    suffix: Optional[str] = None

    def prompts(self) -> list[Union[str, list[int]]]:
        p = self.prompt
        if isinstance(p, str):
            out = [p]
        elif p and all(isinstance(x, int) for x in p):
            out = [list(p)]
        else:
            out = list(p)
        if not out or any(len(x) == 0 for x in out):
            raise APIError("prompt must be a non-empty string, list of strings or token ids", param="prompt")
        return out

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.best_of not in (None, 1, self.n):
            raise APIError("best_of is not supported; choose best-of-N search with model 'bon:n=N'", param="best_of")
        if self.suffix:
            raise APIError("suffix is not supported", param="suffix")
        if self.max_tokens == 0 and not self.echo:
            raise APIError(
                "max_tokens=0 generates nothing; it is meant with echo=true and logprobs to score the prompt",
                param="max_tokens",
            )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[dict], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(
                    "only text content parts are supported ({'type': 'text', 'text': ...})", param="messages"
                )
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``: messages through the strong model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.logprobs:
            raise APIError(
                "logprobs are not supported for chat completions; score text with /v1/completions "
                "(echo=true, max_tokens=0, logprobs=1)",
                param="logprobs",
            )

    @property
    def tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def last_user_turn(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text()
        raise APIError("messages hold no user turn; the guides score the last user message", param="messages")


def _opt(default, text: str):
    return field(default=default, metadata={"help": text})


def _check_positive(cfg, names) -> None:
    """The core's positive-integer check, raised as a :class:`SpecError` (a command line names the flag)."""
    for name in names:
        try:
            check_positive_int(name, getattr(cfg, name))
        except ValueError as e:
            raise SpecError(str(e)) from None


def _check_positive_number(cfg, names) -> None:
    """Finite numbers > 0 (the server's timeouts), else a :class:`SpecError` naming the field."""
    for name in names:
        value = getattr(cfg, name)
        check_number(name, value)
        if value <= 0:
            raise SpecError(f"{name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True)
class Limits:
    """Server-side bounds on one request; each field is a flag of ``w2s-eval serve`` (``--max-tokens``...)."""

    max_tokens: int = _opt(1024, "largest max_tokens a request may ask for")
    max_n: int = _opt(16, "largest n (choices per prompt)")
    max_prompts: int = _opt(256, "most prompts in one completions request")
    default_chat_tokens: int = _opt(256, "max_tokens of a chat request that gives none")
    max_samples: int = _opt(
        64,
        "most strong-model samples per prompt a request's method may draw (bon:n=N draws N, "
        "cbs:w=W,k=K draws W*K per round; base and eft draw 1)",
    )
    max_request_tokens: int = _opt(
        65536, "most strong-model tokens one request may cost: samples per prompt x max_tokens x n x prompts"
    )
    max_stop: int = _opt(16, "most stop strings in one request")
    max_stop_chars: int = _opt(1024, "most characters of one request's stop strings together")

    def __post_init__(self):
        _check_positive(self, [f.name for f in fields(self)])

    def check_cost(
        self,
        method: Method,
        max_tokens: int,
        n: int,
        prompts: int,
        method_param: str = "model",
        tokens_param: str = "max_tokens",
    ) -> None:
        """Refuse (:class:`APIError` naming the limit and its flag) a request whose method draws more samples per
        prompt than ``max_samples``, or whose strong-model tokens (samples x max_tokens x n x prompts) are over
        ``max_request_tokens``. Checked before the method is prepared or anything is queued."""
        samples = method.budget
        if samples > self.max_samples:
            raise APIError(
                f"method {method.spec} draws {samples} strong-model samples per prompt; the server's "
                f"limit is {self.max_samples} (--max-samples)",
                param=method_param,
                code="over_budget",
            )
        cost = samples * max_tokens * n * prompts
        if cost > self.max_request_tokens:
            raise APIError(
                f"this request may cost {cost} strong-model tokens ({samples} samples per prompt x "
                f"{tokens_param}={max_tokens} x n={n} x {prompts} prompt(s)), over the server's limit of "
                f"{self.max_request_tokens} (--max-request-tokens); lower {tokens_param}, n, the number "
                "of prompts or the method's samples",
                param=tokens_param,
                code="over_budget",
            )

    def check_stop(self, stop: tuple) -> None:
        """Refuse more than ``max_stop`` stop strings, or more than ``max_stop_chars`` characters of them."""
        if len(stop) > self.max_stop:
            raise APIError(
                f"{len(stop)} stop strings; the server's limit is {self.max_stop} (--max-stop)",
                param="stop",
                code="over_budget",
            )
        chars = sum(len(s) for s in stop)
        if chars > self.max_stop_chars:
            raise APIError(
                f"the stop strings hold {chars} characters; the server's limit is {self.max_stop_chars} "
                "(--max-stop-chars)",
                param="stop",
                code="over_budget",
            )


@dataclass(frozen=True)
class ServeConfig:
    """What the server needs besides the engine; each field but ``limits`` is a flag of ``w2s-eval serve``."""

    served_model_name: str = _opt("w2s", "the model name clients send for --method")
    api_key: Optional[str] = _opt(
        None, "require 'Authorization: Bearer KEY' on every route (default: $W2S_SERVE_API_KEY when set)"
    )
    max_batch_prompts: int = _opt(32, "prompts per engine batch")
    max_wait_ms: float = _opt(5.0, "how long a batch waits for more requests")
    max_request_bytes: int = _opt(1 << 20, "largest request body")
    header_timeout: float = _opt(
        10.0,
        "seconds a client may take to send a request's headers (from connecting or "
        "from the last response); then the connection is closed",
    )
    body_timeout: float = _opt(30.0, "seconds a client may take to send a request's body; then it gets a 408")
    keep_alive_timeout: float = _opt(5.0, "seconds an idle keep-alive connection stays open")
    max_connections: int = _opt(256, "most open connections; one more is answered 503 and closed")
    max_header_bytes: int = _opt(16384, "largest request line plus headers; a larger one gets a 400")
    shutdown_timeout: float = _opt(
        5.0, "seconds the requests in flight may take to finish after SIGTERM or Ctrl-C; then they are answered 503"
    )
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if not isinstance(self.served_model_name, str) or not self.served_model_name.strip():
            raise SpecError(f"{spelled('served_model_name')} must be a non-empty name, got {self.served_model_name!r}")
        _check_positive(self, ("max_batch_prompts", "max_request_bytes", "max_connections", "max_header_bytes"))
        check_number("max_wait_ms", self.max_wait_ms)
        if self.max_wait_ms < 0:
            raise SpecError(f"{spelled('max_wait_ms')} must be >= 0, got {self.max_wait_ms!r}")
        _check_positive_number(self, ("header_timeout", "body_timeout", "keep_alive_timeout", "shutdown_timeout"))


def resolve_method(req: _Sampling, served_name: str, default: Method) -> Method:
    """The method of a request: its ``method`` field, else ``model`` when that is a method spec
    (``cbs:w=2,k=2,l=30``, ``bon:n=4``, ``base``, ``eft:beta=1``), else the server's default
    when ``model`` is the served name."""
    spec, param = (req.method, "method") if req.method else (req.model, "model")
    if not req.method and spec == served_name:
        return default
    looks_like_method = ":" in spec or spec.strip().lower() in METHOD_NAMES
    if param == "model" and not looks_like_method:
        raise APIError(
            f"model {spec!r} is not served here; use {served_name!r} (the server's method "
            f"{default.spec}) or a method spec such as 'cbs:w=2,k=2,l=30', 'bon:n=4', 'base', "
            "'eft:beta=1'",
            status=404,
            param="model",
            code="model_not_found",
        )
    try:
        return parse_method(spec)
    except ValueError as e:
        raise APIError(f"{param}: {e}", param=param) from None
