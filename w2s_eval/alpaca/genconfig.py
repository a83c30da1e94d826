"""The settings of an AlpacaEval generation run (:class:`GenerationConfig`): the strong model
(local, or behind an OpenAI-compatible endpoint), the guides, the method and the sampling."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from ..config import SamplingConfig, parse_method

__all__ = ["GenerationConfig"]

_TEMPLATE_CHOICES = ("auto", "chat")


@dataclass(frozen=True)
class GenerationConfig:
    """Everything that decides the outputs of an AlpacaEval generation run.

    chat_template: None = use the strong model's chat template when it has one (else the
    instruction as is, logged); True = require it; False = never.
    tuned_template / untuned_template: ``auto`` (the guide's chat template if it has one,
    else ``{prompt}``), ``chat``, or a format string with ``{prompt}``.
    name: the generator name (default: strong model + method, see :attr:`generator`).
    strong_endpoint: an OpenAI-compatible ``/v1`` URL serving the strong model (instead of
    ``strong``); strong_model: the served model's name (None: the server's only model, see
    :func:`resolve_strong_model`); strong_tokenizer: a local tokenizer of the served model, for
    its chat template (without one, the instruction is sent as it is).
    """

    strong: Optional[str] = None
    method: str = "base"
    tuned: Optional[str] = None
    untuned: Optional[str] = None
    reward_model: Optional[str] = None
    beta: float = 1.0
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: int = 0
    dtype: str = "auto"
    chat_template: Optional[bool] = None
    tuned_template: str = "auto"
    untuned_template: str = "auto"
    name: Optional[str] = None
    strong_endpoint: Optional[str] = None
    strong_model: Optional[str] = None
    strong_tokenizer: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "method", parse_method(self.method).spec)  # validates, canonical spec
        self._check_strong()
        object.__setattr__(self, "stop", tuple(self.stop))
        self.sampling  # validates the sampling fields
        if (self.tuned is None) != (self.untuned is None):
            raise ValueError("give both tuned and untuned guide models (the implicit value needs the pair), or neither")
        m = parse_method(self.method)
        if m.name == "eft" and self.tuned is None:
            raise ValueError(f"method {self.method} needs tuned= and untuned= guide models")
        if m.name != "eft" and m.needs_guide and self.tuned is None and self.reward_model is None:
            raise ValueError(f"method {self.method} needs a guide: tuned= and untuned= models, or reward_model=")
        for f in ("tuned_template", "untuned_template"):
            v = getattr(self, f)
            if v not in _TEMPLATE_CHOICES and "{prompt}" not in v:
                raise ValueError(f"{f} must be 'auto', 'chat' or a format string with '{{prompt}}', got {v!r}")
        if self.chat_template not in (None, True, False):
            raise ValueError(f"chat_template must be None (auto), True or False, got {self.chat_template!r}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9._+-]+", self.name):
            raise ValueError(f"name {self.name!r} may hold only letters, digits and . _ + - (it becomes a directory name)")

    def _check_strong(self) -> None:
        """Exactly one strong model: a local one (``strong``) or a served one (``strong_endpoint``)."""
        if self.strong_endpoint is None:
            if not isinstance(self.strong, str) or not self.strong:
                raise ValueError("no strong model: give strong=PATH (a local directory or hub id; --strong), or "
                                 "strong_endpoint=URL (an OpenAI-compatible /v1 server; --strong-endpoint)")
            for f in ("strong_model", "strong_tokenizer"):
                if getattr(self, f) is not None:
                    raise ValueError(f"{f} is for a strong model behind strong_endpoint=URL; with a local strong "
                                     f"model ({self.strong!r}) drop {f} (--{f.replace('_', '-')})")
            return
        if self.strong is not None:
            raise ValueError(f"give the strong model as strong={self.strong!r} (local) or as strong_endpoint="
                             f"{self.strong_endpoint!r} (served), not both; name the served model with strong_model=")
        if not isinstance(self.strong_endpoint, str) or not self.strong_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"strong_endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got "
                             f"{self.strong_endpoint!r}")
        for f in ("strong_model", "strong_tokenizer"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{f} must be a non-empty string or None, got {v!r}")
        if parse_method(self.method).name == "eft":
            raise ValueError(f"method {self.method} needs full next-token distributions of the strong model, which an "
                             f"endpoint ({self.strong_endpoint}) does not give; use bon or cbs there, or a local "
                             "strong=PATH for eft")
        if self.chat_template and self.strong_tokenizer is None:
            raise ValueError("chat_template=True (--chat-template on) over an endpoint needs the served model's "
                             "tokenizer: give strong_tokenizer=PATH (--strong-tokenizer)")

    @property
    def strong_label(self) -> str:
        """The strong model for messages: its path, or ``MODEL at URL``."""
        if self.strong_endpoint is not None:
            return f"{self.strong_model or 'the served model'} at {self.strong_endpoint}"
        return self.strong

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, stop=self.stop, seed=self.seed)

    @property
    def generator(self) -> str:
        """AlpacaEval generator name: ``<strong>__<method>`` e.g. ``SmolLM2-1.7B-Instruct__cbs-w2-k2-l30``;
        over an endpoint ``<model>+<host>-<port>-<path>__<method>`` e.g. ``strong+10.0.0.5-8000-v1__base``."""
        if self.name:
            return self.name
        if self.strong_endpoint is not None:
            from urllib.parse import urlsplit

            url = urlsplit(self.strong_endpoint)
            model = Path((self.strong_model or "served").rstrip("/")).name
            raw = f"{model}+{url.netloc}{url.path}".rstrip("/")
        else:
            raw = Path(self.strong.rstrip("/")).name
        base = re.sub(r"[^A-Za-z0-9._+-]", "-", raw) or "strong"
        tag = self.method.replace(":", "-").replace(",", "-").replace("=", "").replace("/", "+")
        return f"{base}__{tag}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown generation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)
