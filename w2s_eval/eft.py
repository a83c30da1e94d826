"""EFT / emulated fine-tuning (Mitchell et al. 2023) as a strong-model policy.

Per token, the next-token log-probabilities are

    log p_strong(.|x, y<t) + sum_i beta_i * (log p_tuned_i(.|x, y<t) - log p_untuned(.|x, y<t))

which is then warped (temperature, top-k, top-p) and sampled like any policy. All
models read the same token ids, so they must share one vocabulary; each keeps its
own KV cache. EFT sampling is base sampling (W=K=1) from this policy.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .lm import CausalLM
from .policy import TransformersPolicy

__all__ = ["EFTPolicy", "eft_logprobs", "check_same_vocab"]


def check_same_vocab(strong: CausalLM, others: Sequence[CausalLM]) -> None:
    """Raise ValueError unless every model's tokenizer has the strong model's vocabulary."""
    ref = strong.tokenizer.get_vocab()
    for lm in others:
        if lm.tokenizer.get_vocab() != ref:
            raise ValueError(
                f"EFT needs one vocabulary: the tokenizer of {lm.name!r} differs from the strong model "
                f"{strong.name!r}'s; use guides that share the strong model's tokenizer, or a text-level "
                "method (bon, cbs) whose guides may use any tokenizer"
            )


def eft_logprobs(logits: Sequence[torch.Tensor], betas: Sequence[float]) -> torch.Tensor:
    """Combine logits [R, V] of (strong, tuned_1..n, untuned) into EFT log-probs [R, V]."""
    if len(logits) != len(betas) + 2:
        raise ValueError(f"EFT needs strong, {len(betas)} tuned and one untuned model; got {len(logits)} logits")
    lp = [torch.log_softmax(x, dim=-1) for x in logits]
    out = lp[0]
    for beta, tuned in zip(betas, lp[1:-1]):
        if beta != 0:
            out = out + beta * (tuned - lp[-1])
    return out


class EFTPolicy(TransformersPolicy):
    """Sample from the EFT combination of a strong model and (tuned, untuned) guides."""

    def __init__(self, strong: CausalLM, tuned: Sequence[CausalLM], untuned: CausalLM, betas: Sequence[float],
                 add_special_tokens=None):
        tuned = list(tuned)
        if len(betas) != len(tuned):
            raise ValueError(f"EFT got {len(betas)} betas for {len(tuned)} tuned models; pass one beta per tuned model")
        check_same_vocab(strong, [*tuned, untuned])
        super().__init__(strong, add_special_tokens)
        self.tuned, self.untuned, self.betas = tuned, untuned, [float(b) for b in betas]
        self.name = f"eft({strong.name})"

    def _sources(self):
        return [self.lm, *self.tuned, self.untuned], lambda logits: eft_logprobs(logits, self.betas)
