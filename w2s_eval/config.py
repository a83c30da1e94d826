"""Frozen configuration for sampling and for the search methods.

Method specs a user can type (``base``, ``bon:n=16``, ``cbs:w=4,k=4,l=5``,
``eft:beta=1.0``) parse with :func:`parse_method` into the dataclasses here.
Every config validates itself in ``__post_init__`` and raises a ``ValueError``
naming the field and the fix. No I/O happens in this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, make_dataclass
from typing import Optional, Union

from .checks import (
    _help,
    _is_int,
    check_number,
    check_positive_int,
)

__all__ = [
    "SamplingConfig",
    "GenerationSettings",
    "with_defaults",
    "SearchConfig",
    "BaseMethod",
    "BoNMethod",
    "CBSMethod",
    "EFTMethod",
    "Method",
    "parse_method",
    "METHOD_NAMES",
    "context_error",
    "MIN_TEMPERATURE",
    "method_spec",
]

# the smallest temperature above 0: logits divided by less overflow float32 (1e-320 is 0 there; 1e-38 makes the
# logits infinite), and below it sampling is greedy to float precision anyway (send 0 for greedy)
MIN_TEMPERATURE = 1e-4


@dataclass(frozen=True)
class SamplingConfig:
    """How the strong model draws tokens (the knobs of HF ``generate``).

    temperature: 0 means greedy decoding; top_k: 0 disables it; top_p: 1.0 disables it.
    max_new_tokens bounds each response; ``stop`` strings end a response (the text
    is cut before the stop string). ``seed`` makes a run reproducible: each prompt
    gets its own generator, derived from the seed and the prompt text, so results
    do not depend on batch composition.
    ``truncation``: what to do with a prompt longer than the model's context:
    ``"error"`` (default) raises; ``"left"`` drops its oldest tokens with a warning.
    """

    temperature: float = field(default=1.0, metadata=_help("sampling temperature (0 = greedy)"))
    top_k: int = field(default=0, metadata=_help("top-k (0 disables it)"))
    top_p: float = field(default=1.0, metadata=_help("top-p (1.0 disables it)"))
    max_new_tokens: int = field(default=128, metadata=_help("new tokens per response"))
    stop: tuple[str, ...] = field(default=(), metadata=_help("stop string: the response ends before it", cli_list=True))
    seed: int = field(default=0, metadata=_help("run seed (each prompt draws from its own stream)"))
    truncation: str = field(
        default="error",
        metadata=_help("a prompt longer than the context: error, or left (drop its oldest tokens, with a warning)"),
    )

    def __post_init__(self):
        check_number("temperature", self.temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g} (a smaller one "
                f"overflows the logits), got {self.temperature!r}"
            )
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        check_number("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1.0 disables it), got {self.top_p}")
        check_positive_int("max_new_tokens", self.max_new_tokens)
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {self.stop!r}; e.g. stop=['\\n\\n']")
        object.__setattr__(self, "stop", tuple(self.stop))
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.truncation not in ("error", "left"):
            raise ValueError(f"truncation must be 'error' or 'left', got {self.truncation!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class GenerationSettings(SamplingConfig):
    """What to generate: the method and the strong model's sampling (each field with its help, one default and its
    check). The method spec is parsed once, here: :attr:`method` holds its canonical form, :attr:`parsed_method`
    the method config, :attr:`sampling` the plain :class:`SamplingConfig`. Front ends map their own names onto
    these fields (lm-eval's ``max_gen_toks``, serve's ``max_tokens``)."""

    method: str = field(default="base", metadata=_help("base | bon:n=N | cbs:w=W,k=K,l=L | eft:beta=B"))

    def __post_init__(self):
        SamplingConfig.__post_init__(self)
        parsed = parse_method(self.method)
        object.__setattr__(self, "method", parsed.spec)
        object.__setattr__(self, "_parsed", parsed)

    @property
    def parsed_method(self) -> "Method":
        return self._parsed

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(**{f.name: getattr(self, f.name) for f in fields(SamplingConfig)})


def with_defaults(cls, **defaults):
    """A frozen subclass of settings dataclass ``cls`` whose fields ``defaults`` start from other values (a front
    end's presets); help and checks stay ``cls``'s."""
    by_name = {f.name: f for f in fields(cls)}
    unknown = sorted(set(defaults) - set(by_name))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return make_dataclass(
        f"{cls.__name__}Preset",
        [
            (name, by_name[name].type, field(default=value, metadata=by_name[name].metadata))
            for name, value in defaults.items()
        ],
        bases=(cls,),
        frozen=True,
    )


def context_error(
    n: int,
    max_new_tokens: int,
    limit: Optional[int],
    flag: str = "max_new_tokens",
    model: str = "the strong model",
    truncation: bool = False,
) -> Optional[str]:
    """None when a prompt of ``n`` tokens plus ``max_new_tokens`` fits ``model``'s context of ``limit`` (None: no
    limit); else the error, naming the setting as the caller knows it (``flag``) and the fix that applies. Every
    front end words it so. ``truncation``: the caller can set truncation='left' (named only where it helps: not
    when the new tokens alone fill the context)."""
    if limit is None or n + max_new_tokens <= limit:
        return None
    if max_new_tokens >= limit:
        keep = (
            f" (at most {limit - n} keeps this whole prompt)"
            if n < limit
            else ("" if truncation else " and shorten the prompt")
        )
        hint = f"{flag}={max_new_tokens} leaves no room for the prompt: lower {flag} below {limit}{keep}"
    elif truncation:
        hint = f"shorten the prompt, lower {flag}, or set truncation='left'"
    else:
        hint = f"shorten the prompt or lower {flag} (at most {max(limit - n, 0)} fits this prompt)"
    return f"prompt of {n} tokens + {flag}={max_new_tokens} exceeds {model}'s context of {limit}; {hint}"


@dataclass(frozen=True)
class SearchConfig:
    """Chunk-level beam search (CBS): W beams, K successors each, chunks of L tokens.

    ``l=None`` means an unbounded chunk (sample until the response ends).
    BoN(N) = SearchConfig(w=1, k=N, l=None); base sampling = SearchConfig(1, 1, None).
    """

    w: int = 4
    k: int = 4
    l: Optional[int] = 5  # noqa: E741 (the paper's symbol)

    def __post_init__(self):
        check_positive_int("w", self.w)
        check_positive_int("k", self.k)
        check_positive_int("l", self.l, allow_none=True)

    @property
    def samples_per_prompt(self) -> int:
        """Strong-model samples drawn per prompt per round: W*K."""
        return self.w * self.k

    @property
    def needs_scorer(self) -> bool:
        return self.samples_per_prompt > 1


# ----------------------------------------------------------------------------- methods


class _MethodBase:
    """What every method derives from its search shape: the compute budget (strong-model
    samples per prompt, W*K) and whether it needs a guide (more than one candidate)."""

    @property
    def budget(self) -> int:
        return self.search.samples_per_prompt

    @property
    def needs_guide(self) -> bool:
        return self.search.needs_scorer


@dataclass(frozen=True)
class BaseMethod(_MethodBase):
    """Plain sampling from the strong model (CBS with W=K=1, L=inf); needs no guide."""

    name = "base"

    @property
    def search(self) -> SearchConfig:
        return SearchConfig(w=1, k=1, l=None)

    @property
    def spec(self) -> str:
        return "base"


@dataclass(frozen=True)
class BoNMethod(_MethodBase):
    """Best-of-N: N samples, the one the guide scores highest (CBS with W=1, K=N, L=inf)."""

    n: int = 16
    name = "bon"

    def __post_init__(self):
        check_positive_int("n", self.n)

    @property
    def search(self) -> SearchConfig:
        return SearchConfig(w=1, k=self.n, l=None)

    @property
    def spec(self) -> str:
        return f"bon:n={self.n}"


@dataclass(frozen=True)
class CBSMethod(_MethodBase):
    """Chunk-level beam search with W beams, K successors, chunk length L (None = inf)."""

    w: int = 4
    k: int = 4
    l: Optional[int] = 5  # noqa: E741
    name = "cbs"

    def __post_init__(self):
        SearchConfig(self.w, self.k, self.l)  # validates

    @property
    def search(self) -> SearchConfig:
        return SearchConfig(self.w, self.k, self.l)

    @property
    def spec(self) -> str:
        return f"cbs:w={self.w},k={self.k},l={'inf' if self.l is None else self.l}"


@dataclass(frozen=True)
class EFTMethod(_MethodBase):
    """Emulated fine-tuning: logits log p_strong + sum_i beta_i (log p_tuned_i - log p_untuned).

    ``beta`` is one number or one per tuned guide.
    """

    beta: Union[float, tuple[float, ...]] = 1.0
    name = "eft"

    def __post_init__(self):
        betas = self.beta if isinstance(self.beta, (tuple, list)) else (self.beta,)
        if not betas:
            raise ValueError("beta must hold at least one number, e.g. beta=1.0")
        for b in betas:
            check_number("beta", b)
        object.__setattr__(self, "beta", tuple(float(b) for b in betas) if len(betas) > 1 else float(betas[0]))

    @property
    def betas(self) -> tuple[float, ...]:
        return self.beta if isinstance(self.beta, tuple) else (self.beta,)

    @property
    def search(self) -> SearchConfig:
        return SearchConfig(w=1, k=1, l=None)

    @property
    def needs_guide(self) -> bool:  # the guides shape every token's distribution
        return True

    @property
    def spec(self) -> str:
        return "eft:beta=" + "/".join(f"{b:g}" for b in self.betas)


Method = Union[BaseMethod, BoNMethod, CBSMethod, EFTMethod]
_METHODS = {"base": BaseMethod, "bon": BoNMethod, "cbs": CBSMethod, "eft": EFTMethod}
METHOD_NAMES = tuple(_METHODS)


def _parse_value(method: str, key: str, raw: str):
    raw = raw.strip()
    if key == "l" and raw.lower() in ("inf", "none", "infinity"):
        return None
    if key == "beta":
        parts = raw.split("/")
        try:
            vals = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"{method}: beta must be a number (or numbers joined by '/'), got {raw!r}; e.g. beta=1.0"
            ) from None
        return vals if len(vals) > 1 else vals[0]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{method}: {key} must be an integer, got {raw!r}; e.g. {key}=4") from None


def parse_method(spec: Union[str, Method]) -> Method:
    """Parse ``base``, ``bon:n=16``, ``cbs:w=4,k=4,l=5`` or ``eft:beta=1.0`` into a method config.

    >>> parse_method("cbs:w=2,k=3,l=inf").search
    SearchConfig(w=2, k=3, l=None)
    """
    if isinstance(spec, tuple(_METHODS.values())):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"method spec must be a non-empty string like 'cbs:w=4,k=4,l=5', got {spec!r}")
    name, _, argstr = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)} (e.g. 'cbs:w=4,k=4,l=5')")
    cls = _METHODS[name]
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for item in filter(None, (p.strip() for p in argstr.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().lower()
        if not eq:
            raise ValueError(f"{name}: expected key=value, got {item!r}; valid keys: {', '.join(valid) or 'none'}")
        if key not in valid:
            raise ValueError(f"{name}: unknown parameter {key!r}; valid keys: {', '.join(valid) or 'none'}")
        if key in kwargs:
            raise ValueError(f"{name}: {key} is given twice in {spec.strip()!r}; give each key once")
        kwargs[key] = _parse_value(name, key, raw)
    return cls(**kwargs)


def method_spec(spec: Union[str, Method]) -> str:
    """The canonical spec of a method (the parsed method's ``spec``: ``bon:n=02`` -> ``bon:n=2``,
    ``cbs:l=none,w=2,k=2`` -> ``cbs:w=2,k=2,l=inf``); ValueError for what does not parse."""
    return parse_method(spec).spec


def method_to_dict(method: Method) -> dict:
    """A JSON-able description of a method: its name, canonical spec and fields."""
    return {"name": method.name, "spec": method.spec, **asdict(method)}
