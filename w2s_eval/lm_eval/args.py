"""The ``--model_args`` of ``lm_eval --model w2s``: an :class:`~w2s_eval.spec.EngineSpec` plus lm-eval's own keys.

lm-eval hands the backend a dict of already-typed values (``w=4`` arrives as 4,
``beta=0.5`` as 0.5, ``l=inf`` as a float). :func:`parse_model_args` turns that dict
plus lm-eval's own ``batch_size`` / ``device`` into a :class:`W2SArgs`, raising a
``ValueError`` that names the key and the fix, and listing the valid keys for an
unknown one. The engine's fields (strong, tuned, beta, dtype, ...) are the spec's, with
its defaults and messages. No model is loaded here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Union

from ..config import METHOD_NAMES, SamplingConfig, parse_method
from ..spec import EngineSpec, SpecError, coerce, typed_settings

__all__ = ["W2SArgs", "parse_model_args", "MODEL_ARG_KEYS", "ALIASES"]

# keys a user may give that map onto another key
ALIASES = {"pretrained": "strong", "parallelize": "device_map"}
# keys the method spec takes, and the method each belongs to
_METHOD_KEYS = {"w": "cbs", "k": "cbs", "l": "cbs", "n": "bon"}


def _opt(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class W2SArgs(EngineSpec):
    """Everything ``--model_args`` can set: the engine spec's fields, the method, sampling defaults and
    lm-eval's batching (README.md, lm-eval section). ``beta`` is also EFT's beta for ``method=eft``."""

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
        if self.truncation not in ("left", "error"):
            raise ValueError(f"w2s: truncation must be 'left' (as lm-eval's hf backend) or 'error', got {self.truncation!r}")
        for name in ("batch_size", "max_gen_toks", "loglik_batch_size"):
            v = getattr(self, name)
            if (v is not None or name != "loglik_batch_size") and (
                    not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"w2s: {name} must be a positive integer, got {v!r}")
        self.method_config()  # validates w, k, l, n, beta
        self.sampling_defaults()  # validates temperature, top_k, top_p, seed

    def method_config(self):
        """The core method config (``parse_method`` validates it)."""
        parts = [f"{key}={getattr(self, key)}" for key in ("w", "k", "n") if getattr(self, key) is not None]
        if self.method == "cbs" and self.l is not None:
            parts.append(f"l={self.l}")
        if self.method == "eft":
            parts.append(f"beta={self.beta}")
        return parse_method(self.method + (":" + ",".join(parts) if parts else ""))

    def sampling_defaults(self) -> SamplingConfig:
        """Sampling settings the model args fix (the task's generation_kwargs may override)."""
        return SamplingConfig(temperature=0.0 if self.temperature is None else self.temperature,
                              top_k=self.top_k or 0, top_p=1.0 if self.top_p is None else self.top_p,
                              max_new_tokens=self.max_gen_toks, seed=self.seed, truncation=self.truncation)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "method_spec": self.method_config().spec}


MODEL_ARG_KEYS = tuple(f.name for f in fields(W2SArgs)) + tuple(ALIASES)


def _as_l(key: str, v: Any):
    """CBS chunk length: an integer, or inf (a string or lm-eval's float)."""
    if isinstance(v, str) and v.lower() in ("inf", "infinity") or isinstance(v, float) and math.isinf(v):
        return "inf"
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


def parse_model_args(model_args: Mapping[str, Any], lm_eval_config: Optional[Mapping[str, Any]] = None) -> tuple[W2SArgs, Optional[str]]:
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
