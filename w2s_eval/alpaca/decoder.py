"""AlpacaEval's decoder contract for weak-to-strong search, and what generation shares.

:func:`w2s_completions` is a function-shaped AlpacaEval decoder::

    w2s_completions(prompts, strong=..., method="cbs:w=2,k=2,l=30", ...)
        -> {"completions": [...], "price_per_example": [...], "time_per_example": [...]}

alpaca_eval 0.6.6 resolves ``fn_completions`` *names* from a fixed list, but its Python
API takes a callable::

    import alpaca_eval
    from w2s_eval.alpaca.decoder import w2s_completions
    alpaca_eval.evaluate_from_model(model_configs={"my-cbs": {
        "prompt_template": "/abs/path/prompt.txt",  # holds "{instruction}"
        "fn_completions": w2s_completions,
        "completions_kwargs": {"strong": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "method": "cbs:w=2,k=2,l=30", ...}}})

or ``model_configs=load_model_configs(OUT_DIR)`` with the ``configs.yaml`` that
``w2s-eval alpaca-eval generate`` writes. The prompts are instructions: the decoder
applies the strong model's chat template itself (as ``generate`` does); the guides
see the instruction with their own templates (default: their chat template if any).

A strong model behind an OpenAI-compatible server (vLLM) is named with
``strong_endpoint=URL`` (and ``strong_model=NAME``, optional when the server serves one
model) instead of ``strong``. Its chat template then comes from ``strong_tokenizer=PATH``
(a local copy of the served model's tokenizer); without one the instruction is sent as it is.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from ..config import parse_method
from ..scorers import Scorer, Scores
from ..search import score_candidates
from .genconfig import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = ["GenerationConfig", "AlpacaEngine", "build_alpaca_engine", "resolve_strong_model", "w2s_completions",
           "load_model_configs", "model_configs_dict", "DECODER_PATH"]

DECODER_PATH = "w2s_eval.alpaca.decoder.w2s_completions"


class InstructionScorer(Scorer):
    """Hands a guide the raw instruction instead of the strong model's templated prompt.

    The guides apply their own templates; ``raw`` maps each templated prompt to its
    instruction (filled by :meth:`AlpacaEngine.prompts`; unknown prompts pass as they are).
    """

    def __init__(self, inner, raw: dict):
        self.inner, self.raw = inner, raw

    def score(self, prompts, responses, finished) -> Scores:
        values, tokens = score_candidates(self.inner, [self.raw.get(p, p) for p in prompts], list(responses),
                                          list(finished))
        return Scores(torch.tensor(values, dtype=torch.float64), tokens)

    def __repr__(self) -> str:
        return f"InstructionScorer({self.inner!r})"


def _guide_template(choice: str, path: Optional[str]) -> str:
    """``auto``: the guide's chat template when its tokenizer has one, else ``{prompt}``."""
    if choice != "auto":
        return choice
    if path is None:
        return "{prompt}"
    from ..models import load_tokenizer

    return "chat" if getattr(load_tokenizer(path), "chat_template", None) else "{prompt}"


class AlpacaEngine:
    """An :class:`~w2s_eval.engine.Engine` plus the strong tokenizer's chat templating.

    tokenizer: the strong model's tokenizer (default: the local strong model's; over an
    endpoint, the one loaded from ``cfg.strong_tokenizer``, or None: no chat template).
    """

    def __init__(self, cfg: GenerationConfig, engine, tokenizer=None):
        self.cfg, self.engine = cfg, engine
        if tokenizer is None and hasattr(engine.policy, "lm"):
            tokenizer = engine.policy.lm.tokenizer
        self.tokenizer = tokenizer
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if cfg.chat_template and not has_template:
            what = (f"tokenizer {cfg.strong_tokenizer!r}" if cfg.strong_tokenizer
                    else f"strong model {cfg.strong_label!r}")
            raise ValueError(f"chat_template=True but the {what} has no chat template; "
                             "drop the flag to use instructions as they are")
        self.use_chat = has_template if cfg.chat_template is None else bool(cfg.chat_template)
        if cfg.chat_template is None and not has_template:
            if self.tokenizer is None:
                logger.warning("no strong_tokenizer (--strong-tokenizer) for the strong model %s: instructions are "
                               "sent as they are, without its chat template", cfg.strong_label)
            else:
                logger.warning("the strong model %r has no chat template: instructions are given to it as they are",
                               cfg.strong_tokenizer or cfg.strong_label)
        self._raw: dict[str, str] = {}
        if engine.scorer is not None:
            engine.scorer = InstructionScorer(engine.scorer, self._raw)
        engine.check(parse_method(cfg.method))

    def for_config(self, cfg: GenerationConfig) -> "AlpacaEngine":
        """This engine running ``cfg``'s method and sampling; ``cfg`` must name the same models."""
        for key in _LOAD_KEYS:
            if getattr(cfg, key) != getattr(self.cfg, key):
                raise ValueError(f"the engine was loaded with {key}={getattr(self.cfg, key)!r}, the config asks for "
                                 f"{getattr(cfg, key)!r}; load a new engine")
        self.cfg = cfg
        self.engine.check(parse_method(cfg.method))
        return self

    def prompts(self, instructions: Sequence[str]) -> list[str]:
        """The strong model's prompt for each instruction (chat template with a generation prompt)."""
        out = []
        for ins in instructions:
            if self.use_chat:
                p = self.tokenizer.apply_chat_template([{"role": "user", "content": ins}], tokenize=False,
                                                       add_generation_prompt=True)
            else:
                p = ins
            self._raw[p] = ins
            out.append(p)
        return out

    def generate(self, instructions: Sequence[str], batch_size: int = 8):
        """SearchResults for ``instructions`` (one batch call of the engine)."""
        return self.engine.generate(self.prompts(instructions), self.cfg.method, self.cfg.sampling,
                                    batch_size=batch_size)


def build_alpaca_engine(cfg: GenerationConfig, device: str = "auto") -> AlpacaEngine:
    """Load the models of ``cfg`` (through :mod:`w2s_eval.models`) into an :class:`AlpacaEngine`."""
    from ..engine import build_engine

    if cfg.strong_endpoint is not None:
        strong = {"strong_endpoint": cfg.strong_endpoint, "strong_model": cfg.strong_model}
    else:
        strong = {"strong": cfg.strong}
    tokenizer = None
    if cfg.strong_tokenizer is not None:
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(cfg.strong_tokenizer)
    engine = build_engine(**strong, tuned=cfg.tuned, untuned=cfg.untuned, reward_model=cfg.reward_model,
                          beta=cfg.beta, dtype=cfg.dtype, device=device,
                          tuned_template=_guide_template(cfg.tuned_template, cfg.tuned),
                          untuned_template=_guide_template(cfg.untuned_template, cfg.untuned))
    return AlpacaEngine(cfg, engine, tokenizer)


def resolve_strong_model(cfg: GenerationConfig) -> GenerationConfig:
    """``cfg`` with ``strong_model`` filled in: over an endpoint without one, the server's only model."""
    if cfg.strong_endpoint is None or cfg.strong_model is not None:
        return cfg
    from ..endpoint import EndpointPolicy

    policy = EndpointPolicy(cfg.strong_endpoint)
    try:
        name = policy.model  # asks /v1/models; raises when the server serves several
    finally:
        policy.close()
    logger.info("strong model: %r, the one model served at %s", name, cfg.strong_endpoint)
    return replace(cfg, strong_model=name)


_CACHE: dict[tuple, AlpacaEngine] = {}
_LOAD_KEYS = ("strong", "strong_endpoint", "strong_model", "strong_tokenizer", "tuned", "untuned", "reward_model",
              "beta", "dtype", "chat_template", "tuned_template", "untuned_template")


def _cached_engine(cfg: GenerationConfig, device: str) -> AlpacaEngine:
    key = tuple(getattr(cfg, k) for k in _LOAD_KEYS) + (device,)
    hit = _CACHE.get(key)
    if hit is None:
        _CACHE.clear()  # one set of models in memory at a time
        hit = _CACHE[key] = build_alpaca_engine(cfg, device)
    return hit.for_config(cfg)  # sampling and method may differ between calls


def w2s_completions(prompts: Sequence[str], strong: Optional[str] = None, *, model_name: Optional[str] = None,
                    device: str = "auto", batch_size: int = 8, **settings: Any) -> dict[str, list]:
    """AlpacaEval decoder: run a w2s method on each prompt (an instruction).

    ``strong`` (or AlpacaEval's ``model_name``): the strong model; or ``strong_endpoint`` (with
    ``strong_model``) in ``settings``, the fields of :class:`GenerationConfig` (method, tuned,
    untuned, reward_model, temperature, ...).
    The loaded models are kept for the next call with the same models.
    Returns ``completions``, ``price_per_example`` (0: not priced), ``time_per_example`` (seconds).
    """
    if strong and model_name and strong != model_name:
        raise ValueError(f"strong={strong!r} and model_name={model_name!r} differ; give one of them")
    strong = strong or model_name
    if not strong and not settings.get("strong_endpoint"):
        raise ValueError("w2s_completions needs the strong model: completions_kwargs.strong (or model_name), or "
                         "strong_endpoint (with strong_model)")
    if "stop" in settings and settings["stop"] is not None:
        settings["stop"] = tuple(settings["stop"])
    cfg = GenerationConfig.from_dict({"strong": strong, **settings})
    prompts = list(prompts)
    if not prompts:
        return {"completions": [], "price_per_example": [], "time_per_example": []}
    engine = _cached_engine(cfg, device)
    results = engine.generate(prompts, batch_size=batch_size)
    times = [r.stats["wall_time_s"] / max(r.stats["batch_size"], 1) for r in results]
    return {"completions": [r.text for r in results], "price_per_example": [0.0] * len(results),
            "time_per_example": times}


def model_configs_dict(cfg: GenerationConfig, device: str = "auto", batch_size: int = 8,
                       prompt_template: Optional[str] = None) -> dict:
    """AlpacaEval ``models_configs`` entry for ``cfg`` (``fn_completions`` as the dotted decoder path)."""
    kwargs = {k: v for k, v in cfg.to_dict().items() if k not in ("strong", "name") and v is not None}
    kwargs = {**({"model_name": cfg.strong} if cfg.strong else {}), **kwargs, "device": device,
              "batch_size": batch_size}
    shown = Path(cfg.strong.rstrip("/")).name if cfg.strong else cfg.strong_label
    return {cfg.generator: {
        "prompt_template": prompt_template or f"{cfg.generator}/prompt.txt",
        "fn_completions": DECODER_PATH,
        "completions_kwargs": kwargs,
        "pretty_name": f"{shown} + {cfg.method}",
        "link": "https://arxiv.org/abs/2405.19262",
    }}


def _resolve_callable(path: str):
    module, _, attr = path.rpartition(".")
    if not module:
        raise ValueError(f"fn_completions {path!r} is neither an AlpacaEval decoder name nor module.function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"fn_completions {path!r} cannot be imported ({e})") from None


def load_model_configs(path: Union[str, Path]) -> dict:
    """Read a ``configs.yaml`` (or its directory) for ``alpaca_eval.evaluate_from_model(model_configs=...)``.

    A dotted ``fn_completions`` (``w2s_eval.alpaca.decoder.w2s_completions``) becomes the callable,
    which alpaca_eval 0.6.6 accepts from Python, and a relative ``prompt_template``
    (``<name>/prompt.txt``, relative to the models_configs directory, i.e. the parent of
    the directory holding configs.yaml) becomes an absolute path.
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / "configs.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; `w2s-eval alpaca-eval generate` writes it into --out")
    configs = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(configs, dict) or len(configs) != 1:
        raise ValueError(f"{path} must hold exactly one model entry (name: {{prompt_template, fn_completions, ...}})")
    (name, entry), = configs.items()
    entry = dict(entry)
    fn = entry.get("fn_completions")
    if isinstance(fn, str) and "." in fn:
        entry["fn_completions"] = _resolve_callable(fn)
    tmpl = entry.get("prompt_template")
    if isinstance(tmpl, str) and not Path(tmpl).is_absolute():
        for base in (path.parent.parent, path.parent):
            if (base / tmpl).exists():
                entry["prompt_template"] = str((base / tmpl).resolve())
                break
        else:
            if (path.parent / Path(tmpl).name).exists():
                entry["prompt_template"] = str((path.parent / Path(tmpl).name).resolve())
    return {name: entry}
