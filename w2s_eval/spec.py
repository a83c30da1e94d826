"""The one description of an engine: which models, guides, weights, dtype and devices.

:class:`EngineSpec` is what every front end builds an engine from (``build_engine(spec)``):
lm-eval's ``--model_args`` (:mod:`w2s_eval.lm_eval_backend.values`), the ``w2s-eval`` command lines
(:mod:`w2s_eval.flags`) and the Python API. Each field
carries its help text and its one default; ``__post_init__`` validates everything that
needs no I/O and raises :class:`SpecError` naming the field and the fix. A command line
shows the same message with the field spelled as its flag (``--tuned-template``).
No I/O happens in this module.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

from .checks import SpecError, _help, check_number, spelled

__all__ = ["EngineSpec", "method_problem", "check_template", "PLACEMENT_FIELDS", "DTYPE_NAMES"]

DTYPE_NAMES = ("auto", "float32", "fp32", "float16", "fp16", "half", "bfloat16", "bf16")
# fields that decide where models run, not what they compute (left out of a run's identity)
PLACEMENT_FIELDS = ("device", "strong_device", "guide_device", "device_map")
# what a method needs from the models: one wording for the spec's check before loading and the engine's after
_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu|npu|hpu)(:\d+)?")


@dataclass(frozen=True)
class EngineSpec:
    """Models and guide weights of an engine (see each field's ``metadata["help"]``).

    The guide of BoN/CBS is ``beta * (log p_tuned - log p_untuned) + rm_weight * RM``
    (terms whose models are not given are left out, and so are terms of weight 0 beside others:
    ``beta=0`` with a reward model keeps the pair for EFT only); EFT uses the
    tuned/untuned pair with the betas of its method spec.
    """

    strong: Optional[str] = field(
        default=None,
        metadata=_help(
            "strong model: a local directory, a hub id, or a registered name (smollm2-135m, gemma3-270m, qwen2.5-0.5b: "
            "made offline from pinned wheels); or give strong_endpoint instead"
        ),
    )
    strong_endpoint: Optional[str] = field(
        default=None,
        metadata=_help(
            "instead of strong: an OpenAI-compatible /v1 URL serving the strong model, e.g. http://127.0.0.1:8000/v1 "
            "(API key from $OPENAI_API_KEY)"
        ),
    )
    strong_model: Optional[str] = field(
        default=None, metadata=_help("the served model's name at strong_endpoint (default: the server's only model)")
    )
    tuned: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "tuned guide model(s), each with the one untuned model (several: a sum of implicit values; EFT: one "
            "beta each)",
            cli_list=True,
        ),
    )
    untuned: Optional[str] = field(default=None, metadata=_help("untuned guide model (with tuned)"))
    tuned_template: str = field(
        default="{prompt}",
        metadata=_help(
            "what the tuned guides read before the response: a format string with {prompt}, 'chat' (the guide's "
            "chat template) or 'auto' (chat when the guide has a chat template, else {prompt})"
        ),
    )
    untuned_template: str = field(default="{prompt}", metadata=_help("the same for the untuned guide"))
    reward_model: Optional[str] = field(
        default=None,
        metadata=_help(
            "a one-output sequence-classification reward model as guide (added to the implicit value when both "
            "are given)"
        ),
    )
    rm_weight: float = field(default=1.0, metadata=_help("weight of the reward model in the guide"))
    beta: float = field(
        default=1.0,
        metadata=_help(
            "weight of the implicit value log p_tuned - log p_untuned in the BoN/CBS guide (EFT takes its betas "
            "from the method, eft:beta=B)"
        ),
    )
    dtype: str = field(
        default="auto",
        metadata=_help("model dtype: auto (float32 on CPU, bfloat16/float16 on GPU), float32, float16, bfloat16"),
    )
    device: Optional[str] = field(
        default=None,
        metadata=_help(
            "device of all models: None/auto = CUDA when available, else CPU (lm-eval: its --device), cpu, cuda:N"
        ),
    )
    strong_device: Optional[str] = field(default=None, metadata=_help("device of the strong model (default: device)"))
    guide_device: Optional[str] = field(default=None, metadata=_help("device of the guide models (default: device)"))
    device_map: Optional[str] = field(
        default=None, metadata=_help("accelerate device_map of the strong model, e.g. auto (spreads it over the GPUs)")
    )
    load_in_4bit: bool = field(default=False, metadata=_help("load the strong model in 4 bit (bitsandbytes)"))

    def __post_init__(self):
        self._normalize()
        self._check_strong()
        self._check_guides()
        for name in ("rm_weight", "beta"):
            check_number(name, getattr(self, name))
        if self.dtype not in DTYPE_NAMES:
            raise SpecError(f"{spelled('dtype', repr(self.dtype))} is unknown; choose one of {', '.join(DTYPE_NAMES)}")
        for name in ("device", "strong_device", "guide_device"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, str) and _DEVICE.fullmatch(v)):
                raise SpecError(f"{spelled(name, repr(v))} is not a device; give auto, cpu, cuda or cuda:N")
        if not isinstance(self.load_in_4bit, bool):
            raise SpecError(f"{spelled('load_in_4bit')} must be true or false, got {self.load_in_4bit!r}")

    def _normalize(self) -> None:
        t = self.tuned
        if t is None:
            t = ()
        elif isinstance(t, str):
            t = (t,)
        elif not isinstance(t, (list, tuple)):
            raise SpecError(f"{spelled('tuned')} must be a model path or a list of them, got {t!r}")
        object.__setattr__(self, "tuned", tuple(t))
        for name in ("strong", "strong_endpoint", "strong_model", "untuned", "reward_model", "device_map"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise SpecError(f"{spelled(name)} must be a non-empty string or left out, got {v!r}")
        for v in self.tuned:
            if not isinstance(v, str) or not v.strip():
                raise SpecError(f"{spelled('tuned')} must hold non-empty model paths, got {v!r}")
        if self.device == "auto":
            object.__setattr__(self, "device", None)

    def _check_strong(self) -> None:
        """Exactly one strong model: a local one (strong) or a served one (strong_endpoint)."""
        if self.strong_endpoint is None:
            if self.strong is None:
                raise SpecError(
                    f"no strong model: give {spelled('strong', 'PATH_OR_ID')} (a local directory or hub id), "
                    f"or {spelled('strong_endpoint', 'URL')} (an OpenAI-compatible /v1 server) with "
                    f"{spelled('strong_model', 'NAME')}"
                )
            if self.strong_model is not None:
                raise SpecError(
                    f"{spelled('strong_model', repr(self.strong_model))} names a served model: "
                    f"{spelled('strong_model')} goes with {spelled('strong_endpoint', 'URL')} (a served "
                    "strong model); with a local strong model drop it"
                )
            return
        if self.strong is not None:
            raise SpecError(
                f"give the strong model as {spelled('strong', repr(self.strong))} (local) or as "
                f"{spelled('strong_endpoint', repr(self.strong_endpoint))} (served), not both; name the "
                f"served model with {spelled('strong_model', '')}"
            )
        if not re.match(r"https?://[^/\s]+", self.strong_endpoint):
            raise SpecError(
                f"{spelled('strong_endpoint')} must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                f"got {self.strong_endpoint!r}"
            )

    def _check_guides(self) -> None:
        if (not self.tuned) != (self.untuned is None):
            raise SpecError(
                "give both tuned and untuned guide models, or neither (the implicit value needs the "
                f"pair): set both {spelled('tuned', '')} and {spelled('untuned', '')}"
            )
        for name in ("tuned_template", "untuned_template"):
            check_template(name, getattr(self, name))

    # ------------------------------------------------------------------ derived

    @property
    def has_guide(self) -> bool:
        """Whether BoN/CBS have a guide to rank candidates by."""
        return bool(self.tuned) or self.reward_model is not None

    def check_method(self, method) -> None:
        """Raise when ``method`` (a parsed method config) cannot run with these models (no I/O)."""
        problem = method_problem(
            method,
            pair=bool(self.tuned),
            guide=self.has_guide,
            served=self.strong_endpoint and f"an endpoint ({self.strong_endpoint})",
        )
        if problem:
            raise SpecError(problem)

    def engine_spec(self, **changes) -> "EngineSpec":
        """The plain EngineSpec of this object (a front end's config that extends it), with ``changes``."""
        own = {f.name: getattr(self, f.name) for f in fields(EngineSpec)}
        return EngineSpec(**{**own, **changes})

    def to_dict(self) -> dict:
        """JSON-able fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def identity(self) -> dict:
        """:meth:`to_dict` without the placement fields: what decides the outputs."""
        return {k: v for k, v in self.to_dict().items() if k not in PLACEMENT_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise SpecError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


def method_problem(method, pair: bool, guide: bool, served) -> Optional[str]:
    """Why ``method`` cannot run, or None: EFT needs the tuned/untuned ``pair`` and a local strong model (``served``:
    how to name a strong model that is not local, else falsy); BoN/CBS with more than one candidate need a
    ``guide``. The one rule behind :meth:`EngineSpec.check_method` (before loading) and ``Engine.prepare``."""
    if method.name == "eft":
        if not pair:
            return (
                f"method {method.spec}: eft needs a tuned and an untuned guide model; it needs "
                f"{spelled('tuned', '')} and {spelled('untuned', '')} guide models"
            )
        if served:
            return (
                f"method {method.spec}: EFT needs full next-token distributions of the strong model, which "
                f"{served} does not give (an endpoint gives only top logprobs); use bon or cbs there, or a local "
                f"{spelled('strong', 'PATH')} for eft"
            )
    elif method.needs_guide and not guide:
        return (
            f"method {method.spec} needs a guide: give {spelled('tuned', '')} and {spelled('untuned', '')} "
            f"models, or {spelled('reward_model', '')}"
        )
    return None


# ----------------------------------------------------------------------------- checks shared with the front ends


def check_template(name: str, value) -> None:
    """A guide template: 'auto', 'chat', or a format string whose only field is {prompt}."""
    if value in ("auto", "chat"):
        return
    if not isinstance(value, str) or "{prompt}" not in value:
        raise SpecError(f"{spelled(name)} must be 'auto', 'chat' or a format string with '{{prompt}}', got {value!r}")
    try:
        value.format(prompt="")
    except (ValueError, KeyError, IndexError) as e:
        raise SpecError(
            f"{spelled(name, repr(value))} is not a valid format string ({e}); its only field must be "
            "{prompt} "
            "(write a literal brace as {{ or }})"
        ) from None
