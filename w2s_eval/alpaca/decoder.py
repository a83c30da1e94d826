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

import logging
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..endpoint import EndpointPolicy
from ..engine import build_engine, load_tokenizer
from ..extras import require
from ..lm import user_turn
from ..spec import PLACEMENT_FIELDS, EngineSpec
from ..world.strong import with_strong_resolved
from .genconfig import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationConfig",
    "AlpacaEngine",
    "build_alpaca_engine",
    "resolve_served_model",
    "w2s_completions",
    "load_model_configs",
    "model_configs_dict",
    "DECODER_PATH",
]

DECODER_PATH = "w2s_eval.alpaca.decoder.w2s_completions"
# the settings that decide which models are loaded and how (placement aside)
_LOAD_KEYS = tuple(f.name for f in fields(EngineSpec) if f.name not in PLACEMENT_FIELDS) + (
    "strong_tokenizer",
    "chat_template",
)


class AlpacaEngine:
    """An :class:`~w2s_eval.engine.Engine` plus the strong tokenizer's chat templating.

    The strong model reads each instruction through its chat template; the guides read the
    instruction itself (``guide_prompts``), with their own templates. tokenizer: the strong
    model's tokenizer (default: the local strong model's; over an endpoint, the one loaded from
    ``cfg.strong_tokenizer``, or None: no chat template).
    """

    def __init__(self, cfg: GenerationConfig, engine, tokenizer=None):
        self.cfg, self.engine = cfg, engine
        if tokenizer is None and hasattr(engine.policy, "lm"):
            tokenizer = engine.policy.lm.tokenizer
        self.tokenizer = tokenizer
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if cfg.chat_template and not has_template:
            what = (
                f"tokenizer {cfg.strong_tokenizer!r}" if cfg.strong_tokenizer else f"strong model {cfg.strong_label!r}"
            )
            raise ValueError(
                f"chat_template=True but the {what} has no chat template; drop the flag to use instructions as they are"
            )
        self.use_chat = has_template if cfg.chat_template is None else bool(cfg.chat_template)
        if cfg.chat_template is None and not has_template:
            if self.tokenizer is None:
                logger.warning(
                    "no strong_tokenizer (--strong-tokenizer) for the strong model %s: instructions are "
                    "sent as they are, without its chat template",
                    cfg.strong_label,
                )
            else:
                logger.warning(
                    "the strong model %r has no chat template: instructions are given to it as they are",
                    cfg.strong_tokenizer or cfg.strong_label,
                )
        self.run = engine.prepare(cfg.method)  # parsed and checked once per config

    def for_config(self, cfg: GenerationConfig) -> "AlpacaEngine":
        """This engine running ``cfg``'s method and sampling; ``cfg`` must name the same models."""
        for key in _LOAD_KEYS:
            if getattr(cfg, key) != getattr(self.cfg, key):
                raise ValueError(
                    f"the engine was loaded with {key}={getattr(self.cfg, key)!r}, the config asks for "
                    f"{getattr(cfg, key)!r}; load a new engine"
                )
        if cfg.method != self.cfg.method:
            self.run = self.engine.prepare(cfg.method)
        self.cfg = cfg
        return self

    def prompts(self, instructions: Sequence[str]) -> list[str]:
        """The strong model's prompt for each instruction (chat template with a generation prompt)."""
        if not self.use_chat:
            return list(instructions)

        return [user_turn(self.tokenizer, ins) for ins in instructions]

    def check_fit(self, instructions: Sequence[str]) -> None:
        """Raise before generating when an instruction's prompt plus max_new_tokens exceeds the local strong
        model's context (AlpacaEval has no truncation: the instruction is the task;
        :func:`w2s_eval.config.context_error`)."""
        fit_error = getattr(self.engine.policy, "fit_error", None)  # a served strong model: its server checks
        if fit_error is None:
            return
        for ins, prompt in zip(instructions, self.prompts(instructions)):
            error = fit_error(prompt, self.cfg.max_new_tokens, "--max-new-tokens")
            if error is not None:
                raise ValueError(f"instruction {ins[:60]!r}: {error}")

    def generate(self, instructions: Sequence[str], batch_size: int = 8):
        """SearchResults for ``instructions`` (one batch call of the engine)."""
        if isinstance(instructions, (str, bytes)):
            raise TypeError(
                f"instructions must be a list of strings, got one string ({instructions[:40]!r}); pass "
                "[instruction] for a single one"
            )
        instructions = list(instructions)
        return self.engine.generate(
            self.prompts(instructions), self.run, self.cfg.sampling, batch_size=batch_size, guide_prompts=instructions
        )


def build_alpaca_engine(cfg: GenerationConfig, device: Optional[str] = None) -> AlpacaEngine:
    """Load the models of ``cfg`` (``device``: instead of ``cfg.device``) into an :class:`AlpacaEngine`."""

    if device is not None:
        cfg = replace(cfg, device=device)
    tokenizer = None
    if cfg.strong_tokenizer is not None:
        tokenizer = load_tokenizer(cfg.strong_tokenizer)
    return AlpacaEngine(cfg, build_engine(with_strong_resolved(cfg.engine_spec())), tokenizer)


def resolve_served_model(cfg: GenerationConfig) -> GenerationConfig:
    """``cfg`` with ``strong_model`` filled in: over an endpoint without one, the server's only model."""
    if cfg.strong_endpoint is None or cfg.strong_model is not None:
        return cfg

    policy = EndpointPolicy(cfg.strong_endpoint)
    try:
        name = policy.model  # asks /v1/models; raises when the server serves several
    finally:
        policy.close()
    logger.info("strong model: %r, the one model served at %s", name, cfg.strong_endpoint)
    return replace(cfg, strong_model=name)


_CACHE: dict[tuple, AlpacaEngine] = {}


def _cached_engine(cfg: GenerationConfig) -> AlpacaEngine:
    key = tuple(getattr(cfg, k) for k in _LOAD_KEYS + PLACEMENT_FIELDS)
    hit = _CACHE.get(key)
    if hit is None:
        _CACHE.clear()  # one set of models in memory at a time
        hit = _CACHE[key] = build_alpaca_engine(cfg)
    return hit.for_config(cfg)  # sampling and method may differ between calls


def w2s_completions(
    prompts: Sequence[str],
    strong: Optional[str] = None,
    *,
    model_name: Optional[str] = None,
    batch_size: int = 8,
    **settings: Any,
) -> dict[str, list]:
    """AlpacaEval decoder: run a w2s method on each prompt (an instruction); ``prompts`` is a list.

    ``strong`` (or AlpacaEval's ``model_name``): the strong model; or ``strong_endpoint`` (with
    ``strong_model``) in ``settings``, the fields of :class:`GenerationConfig` (method, tuned,
    untuned, reward_model, temperature, device, ...).
    The loaded models are kept for the next call with the same models.
    Returns ``completions``, ``price_per_example`` (0: not priced), ``time_per_example`` (seconds).
    """
    if isinstance(prompts, (str, bytes)):
        raise TypeError(
            f"w2s_completions takes a list of prompts, got one string ({prompts[:40]!r}); pass "
            "[prompt] for a single one"
        )
    if strong and model_name and strong != model_name:
        raise ValueError(f"strong={strong!r} and model_name={model_name!r} differ; give one of them")
    strong = strong or model_name
    if not strong and not settings.get("strong_endpoint"):
        raise ValueError(
            "w2s_completions needs the strong model: completions_kwargs.strong (or model_name), or "
            "strong_endpoint (with strong_model)"
        )
    cfg = GenerationConfig.from_dict({"strong": strong, **settings})
    prompts = list(prompts)
    if not prompts:
        return {"completions": [], "price_per_example": [], "time_per_example": []}
    results = _cached_engine(cfg).generate(prompts, batch_size=batch_size)
    times = [r.stats["wall_time_s"] / max(r.stats["batch_size"], 1) for r in results]
    return {
        "completions": [r.text for r in results],
        "price_per_example": [0.0] * len(results),
        "time_per_example": times,
    }


def model_configs_dict(
    cfg: GenerationConfig, device: Optional[str] = None, batch_size: int = 8, prompt_template: Optional[str] = None
) -> dict:
    """AlpacaEval ``models_configs`` entry for ``cfg`` (``fn_completions`` as the dotted decoder path)."""
    kwargs = {k: v for k, v in cfg.to_dict().items() if k not in ("strong", "name") and v is not None}
    kwargs = {
        **({"model_name": cfg.strong} if cfg.strong else {}),
        **kwargs,
        "device": device or cfg.device or "auto",
        "batch_size": batch_size,
    }
    shown = Path(cfg.strong.rstrip("/")).name if cfg.strong else cfg.strong_label
    return {
        cfg.generator: {
            "prompt_template": prompt_template or f"{cfg.generator}/prompt.txt",
            "fn_completions": DECODER_PATH,
            "completions_kwargs": kwargs,
            "pretty_name": f"{shown} + {cfg.method}",
            "link": "https://arxiv.org/abs/2405.19262",
        }
    }


def _decoder(fn, path: Path):
    """The w2s decoder for its dotted path; an AlpacaEval decoder name as it is; anything else refused
    (a configs.yaml is data: it never names code to import)."""
    if fn == DECODER_PATH:
        return w2s_completions
    if isinstance(fn, str) and re.fullmatch(r"[a-z][a-z0-9_]*_completions", fn):
        return fn  # alpaca_eval resolves its own decoders by name from a fixed list
    raise ValueError(
        f"{path}: fn_completions {fn!r} is not accepted; give {DECODER_PATH} or the name of one of "
        "AlpacaEval's decoders (e.g. openai_completions)"
    )


def load_model_configs(path: Union[str, Path]) -> dict:
    """Read a ``configs.yaml`` (or its directory) for ``alpaca_eval.evaluate_from_model(model_configs=...)``.

    ``fn_completions`` ``w2s_eval.alpaca.decoder.w2s_completions`` becomes the callable, which
    alpaca_eval 0.6.6 accepts from Python; an AlpacaEval decoder name stays a name; anything else
    is refused. A relative ``prompt_template`` (``<name>/prompt.txt``, relative to the models_configs
    directory, i.e. the parent of the directory holding configs.yaml) becomes an absolute path.
    """
    require("yaml", "alpaca")
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / "configs.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; `w2s-eval alpaca-eval generate` writes it into --out")
    configs = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(configs, dict) or len(configs) != 1:
        raise ValueError(f"{path} must hold exactly one model entry (name: {{prompt_template, fn_completions, ...}})")
    ((name, entry),) = configs.items()
    entry = dict(entry)
    if "fn_completions" in entry:
        entry["fn_completions"] = _decoder(entry["fn_completions"], path)
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
