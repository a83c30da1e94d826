"""The settings of an AlpacaEval generation run (:class:`GenerationConfig`): an
:class:`~w2s_eval.spec.EngineSpec` (the strong model, local or behind an OpenAI-compatible
endpoint, and the guides), the core's :class:`~w2s_eval.config.GenerationSettings` (the method and the
sampling, with AlpacaEval's presets :data:`ALPACA_DEFAULTS`) and the chat templating.

``w2s-eval alpaca-eval generate`` makes one flag per field (``add_spec_arguments(parser,
cls=GenerationConfig)``); the decoder's ``completions_kwargs`` are its fields too."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..checks import SpecError, spelled
from ..config import GenerationSettings, with_defaults
from ..spec import EngineSpec

__all__ = ["GenerationConfig", "ALPACA_DEFAULTS"]

# an instruction-following run: sampled, long answers, CBS with chunks of 30 tokens
ALPACA_DEFAULTS = {"method": "cbs:w=2,k=2,l=30", "temperature": 0.7, "top_k": 50, "max_new_tokens": 1024}


def _tri(text: str):
    """``--chat-template auto|on|off`` -> None / True / False."""
    import argparse

    values = {"auto": None, "on": True, "off": False}
    if text not in values:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of auto, on, off")
    return values[text]


def _opt(default, text: str, **extra):
    return field(default=default, metadata={"help": text, **extra})


@dataclass(frozen=True)
class GenerationConfig(with_defaults(GenerationSettings, **ALPACA_DEFAULTS), EngineSpec):
    """Everything that decides the outputs of an AlpacaEval generation run (see each field's help).

    The guides read the instruction (not the strong model's chat-templated prompt) with their
    own templates; for AlpacaEval their default is ``auto`` (the guide's chat template if it has one).
    """

    tuned_template: str = _opt(
        "auto",
        "what the tuned guides read before the response: auto (the guide's chat "
        "template when it has one, else {prompt}), chat, or a format string with "
        "{prompt}",
    )
    untuned_template: str = _opt("auto", "the same for the untuned guide")
    chat_template: Optional[bool] = _opt(
        None,
        "apply the strong model's chat template: auto (when it has one), on, off",
        cli={"type": _tri, "metavar": "{auto,on,off}"},
    )
    name: Optional[str] = _opt(
        None, "generator name (default: <strong>__<method>; over an endpoint <model>+<host>-<port>-<path>__<method>)"
    )
    strong_tokenizer: Optional[str] = _opt(
        None,
        "with strong_endpoint: a local tokenizer of the served model, for "
        "its chat template (without it, instructions are sent as they are)",
    )

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        EngineSpec.__post_init__(self)  # the engine's fields
        GenerationSettings.__post_init__(self)  # the method (parsed once) and the sampling
        self._check_strong_tokenizer()
        self.check_method(self.parsed_method)
        if self.chat_template not in (None, True, False):
            raise SpecError(
                f"{spelled('chat_template')} must be None (auto), True or False, got {self.chat_template!r}"
            )
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9._+-]+", self.name):
            raise SpecError(
                f"{spelled('name', repr(self.name))} may hold only letters, digits and . _ + - (it becomes a directory "
                "name)"
            )

    def _check_strong_tokenizer(self) -> None:
        v = self.strong_tokenizer
        if v is not None and (not isinstance(v, str) or not v):
            raise SpecError(f"{spelled('strong_tokenizer')} must be a non-empty string or None, got {v!r}")
        if self.strong_endpoint is None and v is not None:
            raise SpecError(
                f"{spelled('strong_tokenizer')} is for a strong model behind "
                f"{spelled('strong_endpoint', 'URL')} ({spelled('strong_tokenizer')} goes with "
                f"{spelled('strong_endpoint', 'URL')}); with a local strong model ({self.strong!r}) drop it"
            )
        if self.strong_endpoint is not None and self.chat_template and v is None:
            raise SpecError(
                "chat_template=True (--chat-template on) over an endpoint needs the served model's "
                f"tokenizer: give {spelled('strong_tokenizer', 'PATH')}"
            )

    @property
    def strong_label(self) -> str:
        """The strong model for messages: its path, or ``MODEL at URL``."""
        if self.strong_endpoint is not None:
            return f"{self.strong_model or 'the served model'} at {self.strong_endpoint}"
        return self.strong

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

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationConfig":
        try:
            return super().from_dict(d)
        except SpecError as e:
            if str(e).startswith("unknown setting"):
                raise SpecError(str(e).replace("unknown setting", "unknown generation setting", 1)) from None
            raise
