"""One object that runs any method: a strong engine, a guide scorer, EFT guides.

Adapters (lm-eval, AlpacaEval, the comparison harness) build an :class:`Engine`
with :func:`build_engine` from model names and call :meth:`Engine.generate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

from tqdm.auto import tqdm

from .config import EFTMethod, Method, SamplingConfig, parse_method
from .eft import EFTPolicy
from .guide import GuideLM
from .lm import CausalLM
from .models import load_causal_lm, load_classifier
from .policy import Policy, TransformersPolicy
from .scorers import ImplicitValueScorer, RewardModelScorer, WeightedSum
from .search import SearchResult, chunk_beam_search

logger = logging.getLogger(__name__)

__all__ = ["Engine", "build_engine"]


@dataclass
class Engine:
    """A strong-model policy plus what the methods need from the guides.

    scorer: the guide for BoN / CBS; tuned, untuned: the guide LMs for EFT.
    """

    policy: Policy
    scorer: Optional[Callable] = None
    tuned: list[CausalLM] = field(default_factory=list)
    untuned: Optional[CausalLM] = None

    def check(self, method: Method) -> None:
        """Raise before any generation if ``method`` cannot run with these models."""
        if isinstance(method, EFTMethod):
            if not self.tuned or self.untuned is None:
                raise ValueError("method eft needs a tuned and an untuned guide model (tuned=..., untuned=...)")
            if not isinstance(self.policy, TransformersPolicy):
                raise ValueError(
                    f"EFT needs full next-token distributions of the strong model; {self.policy.name!r} is not a "
                    "local transformers model (an endpoint gives only top logprobs); use bon or cbs there"
                )
            EFTPolicy(self.policy.lm, self.tuned, self.untuned, self.eft_betas(method))  # vocabulary check
        elif method.needs_guide and self.scorer is None:
            raise ValueError(f"method {method.spec} needs a guide: give tuned+untuned models or a reward model")

    def eft_betas(self, method: EFTMethod) -> list[float]:
        """One beta per tuned guide (a single beta applies to all)."""
        betas = list(method.betas)
        return betas * len(self.tuned) if len(betas) == 1 else betas

    def generate(self, prompts: Sequence[str], method: Union[str, Method], sampling: SamplingConfig,
                 seeds: Optional[Sequence[int]] = None, batch_size: int = 8, progress: bool = False) -> list[SearchResult]:
        """Run ``method`` on ``prompts`` in batches of ``batch_size``; one SearchResult per prompt."""
        method = parse_method(method)
        self.check(method)
        policy = self.policy
        if isinstance(method, EFTMethod):
            policy = EFTPolicy(self.policy.lm, self.tuned, self.untuned, self.eft_betas(method),
                               self.policy.add_special_tokens)
        scorer = self.scorer if method.search.needs_scorer else None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[SearchResult] = []
        bar = tqdm(total=len(prompts), desc=method.spec, disable=not progress)
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i : i + batch_size])
            chunk_seeds = None if seeds is None else list(seeds[i : i + batch_size])
            out.extend(chunk_beam_search(chunk, policy, scorer, method.search, sampling, chunk_seeds))
            bar.update(len(chunk))
        bar.close()
        return out


def build_engine(strong: Union[str, CausalLM, Policy, None] = None, *, strong_endpoint: Optional[str] = None,
                 strong_model: Optional[str] = None, tuned: Union[str, Sequence[str], None] = None,
                 untuned: Optional[str] = None, reward_model: Optional[str] = None, beta: float = 1.0,
                 rm_weight: float = 1.0, dtype="auto", device="auto", strong_device=None, guide_device=None,
                 device_map=None, load_in_4bit: bool = False, tuned_template: str = "{prompt}",
                 untuned_template: str = "{prompt}", add_special_tokens=None) -> Engine:
    """Load the models named and assemble an :class:`Engine`.

    strong: a hub id / local directory, a loaded :class:`CausalLM`, or any Policy;
    or ``strong_endpoint`` (an OpenAI-compatible ``/v1`` URL) with ``strong_model``. The implicit-value guide (tuned - untuned, scaled by
    ``beta``) and the reward model (scaled by ``rm_weight``) are summed when both are given.
    """
    guide_dev = guide_device or device
    if strong_endpoint:
        if strong is not None and strong_model is None:
            strong_model = str(strong)  # the served model's name
        from .endpoint import EndpointPolicy

        strong = EndpointPolicy(strong_endpoint, strong_model)
    if strong is None:
        raise ValueError("no strong model: give strong=PATH_OR_ID, or strong_endpoint=URL with strong_model=NAME")
    if isinstance(strong, str):
        strong = load_causal_lm(strong, dtype=dtype, device=strong_device or device, device_map=device_map,
                                load_in_4bit=load_in_4bit, name="strong")
    policy = TransformersPolicy(strong, add_special_tokens) if isinstance(strong, CausalLM) else strong
    if (tuned is None) != (untuned is None):
        raise ValueError("give both tuned and untuned guide models (the implicit value needs the pair), or neither")
    tuned_names = [tuned] if isinstance(tuned, str) else list(tuned or [])
    tuned_lms = [load_causal_lm(t, dtype=dtype, device=guide_dev, name=f"tuned:{t}") for t in tuned_names]
    untuned_lm = load_causal_lm(untuned, dtype=dtype, device=guide_dev, name=f"untuned:{untuned}") if untuned else None
    terms = []
    if tuned_lms:
        untuned_guide = GuideLM(untuned_lm, untuned_template)
        for lm in tuned_lms:
            terms.append((1.0, ImplicitValueScorer(GuideLM(lm, tuned_template), untuned_guide, beta)))
    if reward_model:
        model, tok = load_classifier(reward_model, dtype=dtype, device=guide_dev)
        terms.append((rm_weight, RewardModelScorer(model, tok, name=reward_model)))
    scorer = None
    if len(terms) == 1 and terms[0][0] == 1.0:
        scorer = terms[0][1]
    elif terms:
        scorer = WeightedSum(terms)
    return Engine(policy, scorer, tuned_lms, untuned_lm)
