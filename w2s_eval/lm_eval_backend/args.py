"""The settings of ``lm_eval --model w2s``: its ``--model_args`` (:class:`W2SArgs`: an
:class:`~w2s_eval.spec.EngineSpec` plus the method, sampling defaults and batching) and each request's generation
kwargs (:func:`sampling_config`: the model args fill what the task leaves open). lm-eval hands over typed values
(``w=4`` arrives as 4, ``l=inf`` as a float); a bad one raises a ``ValueError`` naming the key and the fix.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Union

from lm_eval.models.utils import normalize_gen_kwargs
from lm_eval.utils import warning_once

from ..checks import SpecError, check_positive_int
from ..config import METHOD_NAMES, SamplingConfig, parse_method
from ..spec import EngineSpec
from .values import coerce, typed_settings

logger = logging.getLogger(__name__)
__all__ = ["W2SArgs", "parse_model_args", "MODEL_ARG_KEYS", "ALIASES", "sampling_config", "greedy_hint"]

# keys a user may give that map onto another key
ALIASES = {"pretrained": "strong", "parallelize": "device_map"}
# keys of the core's method configs (w, k, l of cbs; n of bon), each with its method; beta is the spec's own
_METHOD_KEYS = {f.name: m for m in METHOD_NAMES for f in fields(parse_method(m)) if f.name != "beta"}


def _opt(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class W2SArgs(EngineSpec):
    """Everything ``--model_args`` can set: the engine spec's fields, the method, sampling defaults and
    lm-eval's batching (docs/lm-eval.md). ``beta`` is also EFT's beta for ``method=eft``."""

    method: str = _opt("cbs", "base, bon, cbs or eft; its parameters as separate keys (w, k, l, n, beta)")
    w: Optional[int] = _opt(None, "CBS beams (default: the core's)")
    k: Optional[int] = _opt(None, "CBS successors per beam (default: the core's)")
    l: Union[int, str, None] = _opt(None, "CBS chunk length; inf = unbounded (default: the core's)")  # noqa: E741
    n: Optional[int] = _opt(None, "BoN samples (default: the core's)")
    temperature: Optional[float] = _opt(None, "sampling temperature (None: the task's setting, greedy if none)")
    top_k: Optional[int] = _opt(None, "top-k (None: the task's setting; 0 disables)")
    top_p: Optional[float] = _opt(None, "top-p (None: the task's setting)")
    seed: int = _opt(0, "run seed")
    max_gen_toks: int = _opt(256, "new tokens when the task gives no max_gen_toks")
    truncation: str = _opt("left", "over-long prompts: left (drop the oldest tokens, as hf) or error")
    stats_path: Optional[str] = _opt(None, "directory of the per-request statistics (default: --output_path)")
    batch_size: int = _opt(8, "prompts per engine batch (lm-eval's --batch_size; auto means 8)")
    loglik_batch_size: Optional[int] = _opt(None, "sequences per forward in loglikelihood (default: batch_size)")
    trust_remote_code: bool = _opt(False, "accepted for lm-eval compatibility; ignored")

    def __post_init__(self):
        try:
            super().__post_init__()
        except SpecError as e:
            raise SpecError(f"w2s: {e}") from None
        if self.method not in METHOD_NAMES:
            raise ValueError(f"w2s: method={self.method!r} is unknown; choose one of {', '.join(METHOD_NAMES)}")
        for key, owner in _METHOD_KEYS.items():
            if getattr(self, key) is not None and self.method != owner:
                raise ValueError(f"w2s: {key}= applies to method={owner}, not method={self.method}; drop it")
        for name in ("batch_size", "max_gen_toks", "loglik_batch_size"):
            try:
                check_positive_int(name, getattr(self, name), allow_none=name == "loglik_batch_size")
            except ValueError as e:
                raise ValueError(f"w2s: {e}") from None
        object.__setattr__(self, "_method", self._parse_method())  # validates w, k, l, n, beta; parsed once
        sampling_config(self, {}, None)  # validates temperature, top_k, top_p, seed, truncation

    def method_config(self):
        """The core method config of ``method`` and its keys (parsed once, when the args are made)."""
        return self._method

    def _parse_method(self):
        parts = [f"{key}={getattr(self, key)}" for key in ("w", "k", "n") if getattr(self, key) is not None]
        if self.method == "cbs" and self.l is not None:
            parts.append(f"l={self.l}")
        if self.method == "eft":
            parts.append(f"beta={self.beta}")
        return parse_method(self.method + (":" + ",".join(parts) if parts else ""))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "method_spec": self.method_config().spec}


MODEL_ARG_KEYS = tuple(f.name for f in fields(W2SArgs)) + tuple(ALIASES)


def _as_l(key: str, v: Any):
    """CBS chunk length: an integer, or inf (a string or lm-eval's float)."""
    if isinstance(v, str) and v.lower() in ("inf", "+inf", "infinity") or isinstance(v, float) and v == math.inf:
        return "inf"  # (-inf is no length: it goes on to the integer check, which refuses it)
    try:
        return coerce(key, int, v)
    except SpecError:
        raise SpecError(f"{key} must be an integer or inf, got {v!r}; e.g. {key}=4") from None


def _as_method(key: str, v: Any) -> Optional[str]:
    m = coerce(key, str, v)
    if ":" in m:
        raise SpecError(f"give the method's parameters as separate keys (method=cbs,w=4,k=4,l=5), got method={m!r}")
    return m.strip().lower() or None


def _batch_size(key: str, v: Any) -> int:
    """lm-eval's --batch_size: an int, a digit string, or auto / auto:N (a fixed default here)."""
    if isinstance(v, str) and v.startswith("auto"):
        return 8
    return coerce(key, int, v)


_SPECIAL = {"l": _as_l, "method": _as_method, "batch_size": _batch_size}


def parse_model_args(
    model_args: Mapping[str, Any], lm_eval_config: Optional[Mapping[str, Any]] = None
) -> tuple[W2SArgs, Optional[str]]:
    """Validate ``model_args`` (from --model_args) and lm-eval's extra config (batch_size, device...).

    Returns the args and the device lm-eval's ``--device`` asked for (None when not given);
    ``device`` in model_args wins over ``--device``.
    """
    raw = dict(model_args or {})
    for alias, key in ALIASES.items():
        if alias in raw:
            if key in raw:
                raise ValueError(f"w2s: give {key}= or its alias {alias}=, not both")
            raw[key] = raw.pop(alias)
    extra = {k: v for k, v in (lm_eval_config or {}).items() if v is not None}
    cli_device = extra.pop("device", None)
    if "batch_size" not in raw and "batch_size" in extra:
        raw["batch_size"] = extra["batch_size"]
    raw.pop("max_batch_size", None)
    try:
        kw = typed_settings(W2SArgs, raw, "model_args", _SPECIAL, ALIASES)
        device = None if cli_device is None else coerce("device", str, cli_device)
    except SpecError as e:
        raise SpecError(f"w2s: {e}") from None
    return W2SArgs(**kw), device


# ----------------------------------------------------------------------------- a request's generation kwargs


_MAX_TOKENS = {"max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens"}  # lm-eval's aliases
_SAMPLING_KEYS = {"until", "do_sample", "temperature", "top_k", "top_p", *_MAX_TOKENS}


def _temperature(gen_kwargs: dict, default: Optional[float]) -> tuple[float, str]:
    """A request's temperature (the task's do_sample/temperature, else the model arg ``default``) and the setting
    that decided it, said as the fix that makes a greedy request sample."""
    over = f" (overriding the model arg temperature={default})" if default else ""
    if gen_kwargs.get("do_sample") is False:
        return 0.0, (
            f"the task sets do_sample=false{over}; pass --gen_kwargs do_sample=true,temperature=0.7 "
            "or change the task's generation_kwargs"
        )
    if "temperature" in gen_kwargs:
        return float(gen_kwargs["temperature"]), (
            f"the task sets temperature={gen_kwargs['temperature']}{over}; pass --gen_kwargs temperature=0.7 "
            "or change the task's generation_kwargs"
        )
    if default is not None:
        return default, f"the model arg temperature={default} asks for it; set temperature=0.7 (any value > 0)"
    return (
        1.0 if gen_kwargs.get("do_sample") is True else 0.0,
        "give the task do_sample/temperature or the model arg temperature=0.7",
    )


def greedy_hint(args, gen_kwargs: dict) -> str:
    """How to make a greedy request sample, for the setting that made it greedy (see :func:`_temperature`)."""
    return _temperature(gen_kwargs, args.temperature)[1]


def sampling_config(args, gen_kwargs: Any, task: Optional[str], max_length: Optional[int] = None):
    """A request's :class:`~w2s_eval.config.SamplingConfig`: its generation kwargs, the model args
    (``args``) filling what the task leaves open; a bad setting (or new tokens that alone fill the strong
    model's context of ``max_length``) raises naming the task."""
    where = f" (task {task})" if task else ""
    if not isinstance(gen_kwargs, dict):
        raise ValueError(f"w2s: generation kwargs must be a dict{where}, got {gen_kwargs!r}")
    until = gen_kwargs.get("until")
    if until is not None and not (
        isinstance(until, str) or (isinstance(until, list) and all(isinstance(s, str) for s in until))
    ):
        raise ValueError(
            f"w2s: 'until'{where} must be a list of strings (or one string), got {until!r}; "
            "fix generation_kwargs.until in the task YAML or --gen_kwargs"
        )
    ignored = sorted(set(gen_kwargs) - _SAMPLING_KEYS)
    if ignored:
        warning_once(
            logger,
            "w2s: ignoring generation kwargs %s (supported: %s)",
            ", ".join(ignored),
            ", ".join(sorted(_SAMPLING_KEYS)),
        )
    kw = normalize_gen_kwargs(gen_kwargs, args.max_gen_toks)
    top_k = gen_kwargs.get("top_k", args.top_k or 0)
    top_p = gen_kwargs.get("top_p", 1.0 if args.top_p is None else args.top_p)
    try:
        cfg = SamplingConfig(
            temperature=_temperature(gen_kwargs, args.temperature)[0],
            top_k=int(top_k or 0),
            top_p=float(top_p),
            max_new_tokens=int(kw["max_gen_toks"]),
            stop=tuple(s for s in kw["until"] if s),
            seed=args.seed,
            truncation=args.truncation,
        )
    except ValueError as e:
        raise ValueError(f"w2s: bad generation settings{where}: {e}") from None
    if max_length is not None and cfg.max_new_tokens >= max_length:
        source = (
            "the task's generation_kwargs (or --gen_kwargs max_gen_toks=...)"
            if _MAX_TOKENS & set(gen_kwargs)
            else "the model arg max_gen_toks (the task gives none)"
        )
        raise ValueError(
            f"w2s: max_gen_toks={cfg.max_new_tokens}{where} leaves no room for the prompt in the strong "
            f"model's context of {max_length} tokens; lower it below {max_length} in {source}"
        )
    return cfg
