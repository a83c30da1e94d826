"""The OpenAI request shapes the server accepts (pydantic), its error type, and method choice.

Requests are validated here, before anything reaches the engine: a bad field becomes an
:class:`APIError` (OpenAI's error JSON, status 4xx) that names the field. Fields OpenAI
defines but search cannot honour (``stream``, penalties, ``logit_bias``, ``best_of``)
are refused with a message saying what to use instead; unknown extra fields are ignored,
as vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..config import (
    METHOD_NAMES,
    Method,
    SamplingConfig,
    check_positive_int,
    parse_method,
)
from ..spec import SpecError, check_number

__all__ = ["APIError", "CompletionRequest", "ChatRequest", "ChatMessage", "Limits", "ServeConfig", "resolve_method",
           "error_body"]


class APIError(Exception):
    """A client error answered with OpenAI's error JSON: ``{"error": {message, type, param, code}}``."""

    def __init__(self, message: str, status: int = 400, param: Optional[str] = None,
                 type: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.message, self.status, self.param, self.type, self.code = message, status, param, type, code


def error_body(message: str, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_CORE = SamplingConfig()  # the core's sampling defaults: the request fields default to them


class _Sampling(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    method: Optional[str] = Field(None, description="w2s extension: the method spec, overriding `model`")
    temperature: float = Field(_CORE.temperature, ge=0)
    top_p: float = Field(_CORE.top_p, gt=0, le=1)
    top_k: int = Field(_CORE.top_k, ge=-1, description="vLLM extension; 0 or -1 disable it")
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=0, lt=2 ** 63)
    n: int = Field(1, ge=1)
    stream: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict] = None
    user: Optional[str] = None

    def refuse_unsupported(self) -> None:
        if self.stream:
            raise APIError("stream=true is not supported: search returns whole responses; send stream=false",
                           param="stream")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(f"{name} is not supported (the strong model samples as HF generate does); omit it "
                               "or send 0", param=name)
        if self.logit_bias:
            raise APIError("logit_bias is not supported; omit it", param="logit_bias")

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
            raise APIError("max_tokens=0 generates nothing; it is meant with echo=true and logprobs to score the "
                           "prompt", param="max_tokens")


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
                raise APIError("only text content parts are supported ({'type': 'text', 'text': ...})",
                               param="messages")
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
            raise APIError("logprobs are not supported for chat completions; score text with /v1/completions "
                           "(echo=true, max_tokens=0, logprobs=1)", param="logprobs")

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


@dataclass(frozen=True)
class Limits:
    """Server-side bounds on one request; each field is a flag of ``w2s-eval serve`` (``--max-tokens``...)."""

    max_tokens: int = _opt(1024, "largest max_tokens a request may ask for")
    max_n: int = _opt(16, "largest n (choices per prompt)")
    max_prompts: int = _opt(256, "most prompts in one completions request")
    default_chat_tokens: int = _opt(256, "max_tokens of a chat request that gives none")

    def __post_init__(self):
        _check_positive(self, [f.name for f in fields(self)])


@dataclass(frozen=True)
class ServeConfig:
    """What the server needs besides the engine; each field but ``limits`` is a flag of ``w2s-eval serve``."""

    served_model_name: str = _opt("w2s", "the model name clients send for --method")
    api_key: Optional[str] = _opt(None, "require 'Authorization: Bearer KEY' on every route (default: "
                                        "$W2S_SERVE_API_KEY when set)")
    max_batch_prompts: int = _opt(32, "prompts per engine batch")
    max_wait_ms: float = _opt(5.0, "how long a batch waits for more requests")
    max_request_bytes: int = _opt(1 << 20, "largest request body")
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if not isinstance(self.served_model_name, str) or not self.served_model_name.strip():
            raise SpecError(f"served_model_name must be a non-empty name, got {self.served_model_name!r}")
        _check_positive(self, ("max_batch_prompts", "max_request_bytes"))
        check_number("max_wait_ms", self.max_wait_ms)
        if self.max_wait_ms < 0:
            raise SpecError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")


def resolve_method(req: _Sampling, served_name: str, default: Method) -> Method:
    """The method of a request: its ``method`` field, else ``model`` when that is a method spec
    (``cbs:w=2,k=2,l=30``, ``bon:n=4``, ``base``, ``eft:beta=1``), else the server's default
    when ``model`` is the served name."""
    spec, param = (req.method, "method") if req.method else (req.model, "model")
    if not req.method and spec == served_name:
        return default
    looks_like_method = ":" in spec or spec.strip().lower() in METHOD_NAMES
    if param == "model" and not looks_like_method:
        raise APIError(f"model {spec!r} is not served here; use {served_name!r} (the server's method "
                       f"{default.spec}) or a method spec such as 'cbs:w=2,k=2,l=30', 'bon:n=4', 'base', "
                       "'eft:beta=1'", status=404, param="model", code="model_not_found")
    try:
        return parse_method(spec)
    except ValueError as e:
        raise APIError(f"{param}: {e}", param=param) from None
