"""The ``--model_args`` of ``lm_eval --model w2s``, parsed and validated in one frozen dataclass.

lm-eval hands the backend a dict of already-typed values (``w=4`` arrives as 4,
``beta=0.5`` as 0.5, ``l=inf`` as a float). :func:`parse_model_args` turns that dict
plus lm-eval's own ``batch_size`` / ``device`` into a :class:`W2SArgs`, raising a
``ValueError`` that names the key and the fix, and listing the valid keys for an
unknown one. No model is loaded here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Union

from ..config import METHOD_NAMES, SamplingConfig, parse_method

__all__ = ["W2SArgs", "parse_model_args", "MODEL_ARG_KEYS", "ALIASES"]

# keys a user may give that map onto another key
ALIASES = {"pretrained": "strong", "parallelize": "device_map"}
# keys the method spec takes, and the method each belongs to
_METHOD_KEYS = {"w": "cbs", "k": "cbs", "l": "cbs", "n": "bon"}


@dataclass(frozen=True)
class W2SArgs:
    """Everything ``--model_args`` can set (see README.md, lm-eval section for the meaning of each key)."""

    strong: Optional[str] = None
    tuned: tuple[str, ...] = ()
    untuned: Optional[str] = None
    reward_model: Optional[str] = None
    rm_weight: float = 1.0
    method: str = "cbs"
    w: Optional[int] = None
    k: Optional[int] = None
    l: Union[int, str, None] = None  # noqa: E741 (the paper's symbol); "inf" = unbounded; None = the core default
    n: Optional[int] = None
    beta: float = 1.0
    temperature: Optional[float] = None  # None: the task's setting (greedy when it sets none)
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: int = 0
    max_gen_toks: int = 256
    truncation: str = "left"
    dtype: str = "auto"
    device: Optional[str] = None
    strong_device: Optional[str] = None
    guide_device: Optional[str] = None
    device_map: Optional[str] = None
    load_in_4bit: bool = False
    tuned_template: str = "{prompt}"
    untuned_template: str = "{prompt}"
    strong_endpoint: Optional[str] = None
    strong_model: Optional[str] = None
    stats_path: Optional[str] = None
    batch_size: int = 8
    loglik_batch_size: Optional[int] = None
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.strong is None and self.strong_endpoint is None:
            raise ValueError("w2s: model_args needs strong=PATH_OR_ID (the strong model), or "
                             "strong_endpoint=URL with strong_model=NAME")
        if self.method not in METHOD_NAMES:
            raise ValueError(f"w2s: method={self.method!r} is unknown; choose one of {', '.join(METHOD_NAMES)}")
        for key, owner in _METHOD_KEYS.items():
            if getattr(self, key) is not None and self.method != owner:
                raise ValueError(f"w2s: {key}= applies to method={owner}, not method={self.method}; drop it")
        if (not self.tuned) != (self.untuned is None):
            raise ValueError("w2s: give both tuned= and untuned= guide models (the implicit value needs the pair), "
                             "or neither")
        if self.truncation not in ("left", "error"):
            raise ValueError(f"w2s: truncation must be 'left' (as lm-eval's hf backend) or 'error', got {self.truncation!r}")
        for name in ("batch_size", "max_gen_toks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"w2s: {name} must be a positive integer, got {v!r}")
        if self.loglik_batch_size is not None and (not isinstance(self.loglik_batch_size, int) or self.loglik_batch_size < 1):
            raise ValueError(f"w2s: loglik_batch_size must be a positive integer, got {self.loglik_batch_size!r}")
        self.method_config()  # validates w, k, l, n, beta
        self.sampling_defaults()  # validates temperature, top_k, top_p, seed

    def method_config(self):
        """The core method config (``parse_method`` validates it)."""
        parts = []
        for key in ("w", "k", "n"):
            if getattr(self, key) is not None:
                parts.append(f"{key}={getattr(self, key)}")
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

    @property
    def implicit_beta(self) -> float:
        """beta of the implicit-value guide for bon/cbs (EFT takes beta in its method spec)."""
        return self.beta

    def engine_kwargs(self, device: Optional[str]) -> dict:
        """Keyword arguments of :func:`w2s_eval.engine.build_engine`."""
        tuned: Union[str, list[str], None] = list(self.tuned) if len(self.tuned) > 1 else (self.tuned[0] if self.tuned else None)
        return dict(strong=self.strong, strong_endpoint=self.strong_endpoint, strong_model=self.strong_model,
                    tuned=tuned, untuned=self.untuned, reward_model=self.reward_model, beta=self.implicit_beta,
                    rm_weight=self.rm_weight, dtype=self.dtype, device=device or "auto",
                    strong_device=self.strong_device, guide_device=self.guide_device, device_map=self.device_map,
                    load_in_4bit=self.load_in_4bit, tuned_template=self.tuned_template,
                    untuned_template=self.untuned_template)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tuned"] = list(self.tuned)
        d["method_spec"] = self.method_config().spec
        return d


MODEL_ARG_KEYS = tuple(f.name for f in fields(W2SArgs)) + tuple(ALIASES)


def _as_int(key: str, v: Any, allow_inf: bool = False):
    if v is None:
        return None
    if allow_inf and (isinstance(v, str) and v.lower() in ("inf", "infinity") or
                      isinstance(v, float) and math.isinf(v)):
        return "inf"
    if isinstance(v, bool):
        raise ValueError(f"w2s: {key} must be an integer, got {v!r}")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if isinstance(v, int):
        return v
    raise ValueError(f"w2s: {key} must be an integer{' or inf' if allow_inf else ''}, got {v!r}; e.g. {key}=4")


def _as_float(key: str, v: Any) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError(f"w2s: {key} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"w2s: {key} must be a number, got {v!r}; e.g. {key}=1.0") from None


def _as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"w2s: {key} must be true or false, got {v!r}")


def _as_str(key: str, v: Any) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, (dict, list, tuple, bool)):
        raise ValueError(f"w2s: {key} must be a string, got {v!r}")
    return str(v)


def _batch_size(v: Any) -> int:
    """lm-eval's --batch_size: an int, a digit string, or auto / auto:N (a fixed default here)."""
    if v is None:
        return 8
    if isinstance(v, str) and v.startswith("auto"):
        return 8
    return _as_int("batch_size", v)


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
    unknown = sorted(set(raw) - set(MODEL_ARG_KEYS))
    if unknown:
        raise ValueError(f"w2s: unknown model_args key(s) {', '.join(unknown)}; valid keys: "
                         f"{', '.join(sorted(MODEL_ARG_KEYS))}")
    extra = {k: v for k, v in (lm_eval_config or {}).items() if v is not None}
    cli_device = extra.pop("device", None)
    if "batch_size" not in raw and "batch_size" in extra:
        raw["batch_size"] = extra["batch_size"]
    raw.pop("max_batch_size", None)

    kw: dict[str, Any] = {}
    for key in ("strong", "untuned", "reward_model", "dtype", "device", "strong_device", "guide_device",
                "tuned_template", "untuned_template", "strong_endpoint", "strong_model", "stats_path", "truncation"):
        if key in raw:
            kw[key] = _as_str(key, raw[key])
    if kw.get("dtype") is None:
        kw.pop("dtype", None)
    if "tuned" in raw and raw["tuned"] is not None:
        t = raw["tuned"]
        kw["tuned"] = tuple(str(x) for x in t) if isinstance(t, (list, tuple)) else tuple(p for p in str(t).split("|") if p)
    if "method" in raw:
        m = _as_str("method", raw["method"]) or ""
        if ":" in m:
            raise ValueError(f"w2s: give the method's parameters as separate keys (method=cbs,w=4,k=4,l=5), got method={m!r}")
        kw["method"] = m.strip().lower()
    for key in ("w", "k", "n", "top_k", "seed", "max_gen_toks", "loglik_batch_size"):
        if key in raw:
            kw[key] = _as_int(key, raw[key])
    if "l" in raw:
        kw["l"] = _as_int("l", raw["l"], allow_inf=True)
    for key in ("beta", "rm_weight", "temperature", "top_p"):
        if key in raw:
            kw[key] = _as_float(key, raw[key])
    for key in ("load_in_4bit", "trust_remote_code"):
        if key in raw:
            kw[key] = _as_bool(key, raw[key])
    if "device_map" in raw:
        dm = raw["device_map"]
        kw["device_map"] = ("auto" if dm else None) if isinstance(dm, bool) else _as_str("device_map", dm)
    if "batch_size" in raw:
        kw["batch_size"] = _batch_size(raw["batch_size"])
    if kw.get("method") == "":
        kw.pop("method")
    # a None given for a key whose default is not None means "the default"
    defaults = {f.name: f.default for f in fields(W2SArgs)}
    kw = {k: v for k, v in kw.items() if v is not None or defaults.get(k) is None}
    return W2SArgs(**kw), _as_str("device", cli_device)
