"""One object that runs any method: a strong policy, the guide terms, EFT's guide models.

Adapters (lm-eval, AlpacaEval, the comparison harness) describe an engine with an
:class:`~w2s_eval.spec.EngineSpec`, build it with :func:`build_engine` and call
:meth:`Engine.generate`.

The guide contract: ``engine.guides`` is a tuple of :class:`~w2s_eval.guide.GuideTerm`
``(weight, kind, scorer)``; BoN/CBS rank candidates by ``sum weight * scorer(...)``. The
engine never changes after it is built (to use another guide, build another engine:
``Engine(engine.policy, guides=..., tuned=engine.tuned, untuned=engine.untuned)``).
What the guides read as each prompt (e.g. the raw instruction rather than the chat-templated
prompt) is the explicit ``guide_prompts`` argument of :meth:`Engine.generate`.
:meth:`Engine.prepare` parses and checks a method once; pass its result to ``generate``.

This is also the one place that loads models (strong LMs, guides, reward models, classifiers): each loader takes a
hub id or a local directory, ``dtype``, ``device`` ("auto" picks CUDA when it is there, else CPU), an optional
``device_map`` (multi-GPU through accelerate) and optional 4-bit loading (bitsandbytes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from .checks import MissingModelError, SpecError, check_positive_int, spelled
from .config import EFTMethod, Method, SamplingConfig, parse_method
from .eft import EFTPolicy
from .endpoint import EndpointPolicy
from .flops import shape_of
from .guide import GuideLM, GuideTerm, ImplicitValueScorer, guide_scorer
from .lm import CausalLM
from .policy import Policy, TransformersPolicy
from .scorers import RewardModelScorer
from .search import SearchResult, chunk_beam_search
from .spec import EngineSpec, method_problem

logger = logging.getLogger(__name__)

__all__ = [
    "Engine",
    "PreparedMethod",
    "build_engine",
    "guide_template",
    "check_model_sources",
    "check_model_path",
    "resolve_device",
    "resolve_dtype",
    "load_causal_lm",
    "load_classifier",
    "load_tokenizer",
]


# ----------------------------------------------------------------------------- loading models


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """``"auto"``: float32 on CPU, bfloat16 on GPUs that support it (else float16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def _looks_local(path: str) -> bool:
    """A path rather than a hub id (``org/name``)."""
    return os.path.isabs(path) or path.startswith(".") or path.count("/") > 1 or os.path.exists(path)


def _check_source(name_or_path: str, name: Optional[str] = None) -> str:
    """What to load from: a local path, which must exist (else FileNotFoundError; a :class:`MissingModelError`
    naming the setting ``name`` when given), or anything shaped like ``org/name``, left to the hub."""
    path = os.path.expanduser(str(name_or_path))
    if _looks_local(path) and not os.path.exists(path):
        what, error = (
            (spelled(name, repr(name_or_path)), MissingModelError)
            if name
            else (f"model path {name_or_path!r}", FileNotFoundError)
        )
        raise error(f"{what} does not exist; give an existing model directory or a hub id")
    return path if os.path.exists(path) else str(name_or_path)


def load_tokenizer(name_or_path: str, gguf_file: Optional[str] = None, **kwargs):
    from transformers import AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(_check_source(name_or_path), **extra, **kwargs)
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _load_kwargs(dtype, device, device_map, load_in_4bit, gguf_file) -> tuple[dict, Optional[torch.device]]:
    dev = resolve_device(device) if device_map is None else None
    kwargs = {"dtype": resolve_dtype(dtype, dev or resolve_device("auto"))}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ImportError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=kwargs["dtype"])
        kwargs.setdefault("device_map", {"": str(dev or resolve_device("auto"))})
        dev = None
    return kwargs, dev


def _load(auto_cls, name_or_path: str, dtype, device, device_map, load_in_4bit: bool, gguf_file: Optional[str]):
    """(model in eval mode on its device, local path or hub id it came from)."""
    source = _check_source(name_or_path)
    kwargs, dev = _load_kwargs(dtype, device, device_map, load_in_4bit, gguf_file)
    model = auto_cls.from_pretrained(source, **kwargs)
    if dev is not None:
        model = model.to(dev)
    model.eval()
    logger.info("loaded %s (%s) on %s", name_or_path, kwargs["dtype"], next(model.parameters()).device)
    return model, source


def load_causal_lm(
    name_or_path: str,
    *,
    dtype="auto",
    device="auto",
    device_map=None,
    load_in_4bit: bool = False,
    gguf_file: Optional[str] = None,
    name: Optional[str] = None,
) -> CausalLM:
    """Load a causal LM and its tokenizer (hub id or local directory) as a :class:`CausalLM`."""
    from transformers import AutoModelForCausalLM

    model, source = _load(AutoModelForCausalLM, name_or_path, dtype, device, device_map, load_in_4bit, gguf_file)
    return CausalLM(model, load_tokenizer(source, gguf_file), name or str(name_or_path))


def load_classifier(name_or_path: str, *, dtype="auto", device="auto", device_map=None, load_in_4bit: bool = False):
    """Load a sequence-classification model (reward model or classifier) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    model, source = _load(
        AutoModelForSequenceClassification, name_or_path, dtype, device, device_map, load_in_4bit, None
    )
    tok = load_tokenizer(source)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


# ----------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class PreparedMethod:
    """A method parsed and checked against one engine, with the policy and scorer it runs with."""

    method: Method
    policy: Policy
    scorer: Optional[Callable]
    engine_id: int

    @property
    def spec(self) -> str:
        return self.method.spec


class Engine:
    """A strong-model policy plus what the methods need from the guides.

    guides: tuple of :class:`GuideTerm` (weight, kind, scorer), the BoN/CBS guide (read-only);
    tuned, untuned: the guide LMs for EFT; spec: the EngineSpec it was built from (None when
    assembled by hand). ``Engine(policy, scorer)`` is short for one ``custom`` guide term of weight 1.
    """

    def __init__(
        self,
        policy: Policy,
        scorer: Optional[Callable] = None,
        tuned: Sequence[CausalLM] = (),
        untuned: Optional[CausalLM] = None,
        *,
        guides: Optional[Sequence] = None,
        spec: Optional[EngineSpec] = None,
    ):
        if scorer is not None and guides is not None:
            raise ValueError("give scorer= (one custom guide) or guides= (weighted terms), not both")
        if guides is None:
            guides = () if scorer is None else ((1.0, "custom", scorer),)
        self.policy, self.tuned, self.untuned, self.spec = policy, list(tuned), untuned, spec
        self._guides = tuple(GuideTerm(*g).check() for g in guides)
        self._scorer = guide_scorer(self._guides)

    @property
    def guides(self) -> tuple[GuideTerm, ...]:
        return self._guides

    @property
    def scorer(self) -> Optional[Callable]:
        """The one scorer the guide terms sum to (None without a guide)."""
        return self._scorer

    def check(self, method: Union[str, Method]) -> None:
        """Raise before any generation if ``method`` cannot run with these models."""
        self.prepare(method)

    def prepare(self, method: Union[str, Method, PreparedMethod]) -> PreparedMethod:
        """Parse and check ``method`` once; the result runs with :meth:`generate` without more checks."""
        if isinstance(method, PreparedMethod):
            if method.engine_id != id(self):
                raise ValueError(f"method {method.spec} was prepared by another engine; prepare it with this one")
            return method
        method = parse_method(method)
        local = isinstance(self.policy, TransformersPolicy)
        problem = method_problem(
            method,
            pair=bool(self.tuned) and self.untuned is not None,
            guide=self._scorer is not None,
            served=not local and f"{self.policy.name!r}, not a local transformers model,",
        )
        if problem:
            raise SpecError(problem)
        policy = self.policy
        if isinstance(method, EFTMethod):
            policy = EFTPolicy(
                self.policy.lm, self.tuned, self.untuned, self.eft_betas(method), self.policy.add_special_tokens
            )  # checks the vocabularies
        return PreparedMethod(method, policy, self._scorer if method.search.needs_scorer else None, id(self))

    def model_roles(self) -> dict[str, str]:
        """{model name: its role}: ``strong``, ``tuned`` (``tuned_1``, ``tuned_2``, ... for several), ``untuned``,
        ``reward_model``; the keys of each result's ``stats["compute"]`` (other models keep their names)."""
        strong = getattr(self.policy, "lm", None)
        roles = {getattr(strong, "name", None) or self.policy.name: "strong"}
        for i, lm in enumerate(self.tuned):
            roles[lm.name] = "tuned" if len(self.tuned) == 1 else f"tuned_{i + 1}"
        if self.untuned is not None:
            roles[self.untuned.name] = "untuned"
        for term in self._guides:
            if term.kind == "reward_model":
                roles[getattr(term.scorer, "name", "reward_model")] = "reward_model"
        return roles

    def model_shapes(self) -> dict[str, dict]:
        """{role (see :meth:`model_roles`): its :class:`~w2s_eval.flops.ModelShape` as a dict} of every local model
        (a served strong model has none)."""
        roles, shapes = self.model_roles(), {}
        models = [getattr(self.policy, "lm", None), *self.tuned, self.untuned]
        for lm in models:
            if lm is not None and lm.shape is not None:
                shapes[roles.get(lm.name, lm.name)] = lm.shape.to_dict()
        for term in self._guides:
            if term.kind == "reward_model":
                shapes["reward_model"] = shape_of(term.scorer.model).to_dict()
        return dict(sorted(shapes.items()))

    def eft_betas(self, method: EFTMethod) -> list[float]:
        """One beta per tuned guide (a single beta applies to all)."""
        betas = list(method.betas)
        return betas * len(self.tuned) if len(betas) == 1 else betas

    def generate(
        self,
        prompts: Sequence[str],
        method: Union[str, Method, PreparedMethod],
        sampling: SamplingConfig,
        seeds: Optional[Sequence[int]] = None,
        batch_size: int = 8,
        progress: bool = False,
        guide_prompts: Optional[Sequence[str]] = None,
    ) -> list[SearchResult]:
        """Run ``method`` on ``prompts`` (a list of strings) in batches of ``batch_size``; one SearchResult each.

        guide_prompts: what the guides read as each prompt (default: the prompt itself), one per prompt.
        """
        for name, value in (("prompts", prompts), ("guide_prompts", guide_prompts)):
            if isinstance(value, (str, bytes)):
                raise TypeError(
                    f"{name} must be a list of strings, got one string ({value[:40]!r}); "
                    f"pass [{name[:-1]}] for a single one"
                )
        if guide_prompts is not None and len(guide_prompts) != len(prompts):
            raise ValueError(f"got {len(guide_prompts)} guide_prompts for {len(prompts)} prompts; pass one per prompt")
        check_positive_int("batch_size", batch_size)
        run = self.prepare(method)
        roles = self.model_roles()
        out: list[SearchResult] = []
        bar = tqdm(total=len(prompts), desc=run.spec, disable=not progress)
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i : i + batch_size])
            chunk_seeds = None if seeds is None else list(seeds[i : i + batch_size])
            chunk_guide = None if guide_prompts is None else list(guide_prompts[i : i + batch_size])
            for r in chunk_beam_search(
                chunk, run.policy, run.scorer, run.method.search, sampling, chunk_seeds, chunk_guide
            ):
                r.stats["compute"] = {
                    roles.get(k, k): v
                    for k, v in sorted(r.stats["compute"].items(), key=lambda kv: roles.get(kv[0], kv[0]))
                }
                out.append(r)
            bar.update(len(chunk))
        bar.close()
        return out


def guide_template(choice: str, path: Optional[str]) -> str:
    """A guide's template: ``auto`` becomes ``chat`` when the guide's tokenizer has a chat template, else
    ``{prompt}``."""
    if choice != "auto":
        return choice
    if path is None:
        return "{prompt}"
    return "chat" if getattr(load_tokenizer(path), "chat_template", None) else "{prompt}"


def _strong_policy(spec: EngineSpec, strong: Union[CausalLM, Policy, None], add_special_tokens) -> Policy:
    if strong is None and spec.strong_endpoint:
        return EndpointPolicy(spec.strong_endpoint, spec.strong_model)
    if strong is None:
        strong = load_causal_lm(
            spec.strong,
            dtype=spec.dtype,
            device=spec.strong_device or spec.device or "auto",
            device_map=spec.device_map,
            load_in_4bit=spec.load_in_4bit,
            name="strong",
        )
    return TransformersPolicy(strong, add_special_tokens) if isinstance(strong, CausalLM) else strong


def _guides(spec: EngineSpec) -> tuple[list[CausalLM], Optional[CausalLM], list[GuideTerm]]:
    """Load the guide models of ``spec``: (tuned LMs, untuned LM, guide terms)."""
    dev = spec.guide_device or spec.device or "auto"
    tuned = [load_causal_lm(t, dtype=spec.dtype, device=dev, name=f"tuned:{t}") for t in spec.tuned]
    untuned = (
        load_causal_lm(spec.untuned, dtype=spec.dtype, device=dev, name=f"untuned:{spec.untuned}")
        if spec.untuned
        else None
    )
    terms = []
    if tuned:
        untuned_guide = GuideLM(untuned, guide_template(spec.untuned_template, spec.untuned))
        for path, lm in zip(spec.tuned, tuned):
            implicit = ImplicitValueScorer(GuideLM(lm, guide_template(spec.tuned_template, path)), untuned_guide, 1.0)
            terms.append(GuideTerm(spec.beta, "implicit", implicit))
    if spec.reward_model:
        model, tok = load_classifier(spec.reward_model, dtype=spec.dtype, device=dev)
        terms.append(GuideTerm(spec.rm_weight, "reward_model", RewardModelScorer(model, tok, name=spec.reward_model)))
    # a term of weight 0 adds nothing: left out beside others (beta=0 with a reward model: the pair serves EFT
    # only); when every term weighs 0 they stay, and every candidate scores 0
    return tuned, untuned, [t for t in terms if t.weight != 0] or terms


def check_model_path(name: str, value: str) -> None:
    """A local model path exists and is a model directory (holds config.json), else an error naming ``name``;
    hub ids (``org/name``) are left to the hub."""
    path = _check_source(value, name)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        raise SpecError(
            f"{spelled(name, repr(value))} is a directory but not a model (no config.json in it); give a "
            "transformers model directory or a hub id"
        )


def check_model_sources(spec: EngineSpec, strong_given: bool = False) -> None:
    """Before loading anything: every local model path of ``spec`` (see :func:`check_model_path`).
    ``strong_given``: the strong model is already loaded (not checked)."""
    named = [
        ("strong", None if strong_given else spec.strong),
        *(("tuned", t) for t in spec.tuned),
        ("untuned", spec.untuned),
        ("reward_model", spec.reward_model),
    ]
    for name, value in named:
        if value is not None:
            check_model_path(name, value)


def _engine_from_spec(
    spec: EngineSpec, strong: Union[CausalLM, Policy, None] = None, add_special_tokens=None
) -> Engine:
    check_model_sources(spec, strong_given=strong is not None)
    policy = _strong_policy(spec, strong, add_special_tokens)
    tuned, untuned, terms = _guides(spec)
    return Engine(policy, tuned=tuned, untuned=untuned, guides=terms, spec=spec)


def build_engine(spec: Union[EngineSpec, str, CausalLM, Policy, None] = None, /, **kwargs) -> Engine:
    """Load the models an :class:`EngineSpec` names and assemble an :class:`Engine`.

    ``build_engine(spec)`` is the form every front end uses. The keyword form
    ``build_engine(strong, tuned=..., untuned=..., beta=..., ...)`` takes the spec's fields as
    keywords (``strong`` may also be a loaded :class:`CausalLM` or any Policy; ``add_special_tokens``
    goes to the strong policy) and is a thin wrapper that builds the spec.
    """
    if isinstance(spec, EngineSpec):
        if kwargs:
            raise TypeError(f"build_engine(spec) takes no other arguments, got {', '.join(sorted(kwargs))}")
        return _engine_from_spec(spec)
    add_special_tokens = kwargs.pop("add_special_tokens", None)
    strong = kwargs.pop("strong", spec)
    obj = None
    if strong is not None and not isinstance(strong, str):
        obj, strong = strong, None
    if kwargs.get("strong_endpoint") and strong is not None and kwargs.get("strong_model") is None:
        kwargs["strong_model"], strong = strong, None  # the served model's name
    if obj is not None and not kwargs.get("strong_endpoint"):
        kwargs["strong"] = getattr(obj, "name", None) or "strong"
        kwargs.pop("strong_endpoint", None)
    elif strong is not None:
        kwargs["strong"] = strong
    if "tuned" in kwargs and kwargs["tuned"] is None:
        kwargs["tuned"] = ()
    return _engine_from_spec(EngineSpec(**kwargs), obj, add_special_tokens)
