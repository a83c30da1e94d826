"""EFT, emulated fine-tuning (Mitchell et al. 2023), as a policy: per token it samples from

    log p_strong + sum_i beta_i (log p_tuned_i - log p_untuned)

normalised, with HF's warpers applied to the mix (:class:`EFTPolicy`; EFT sampling is base sampling, W=K=1, from
this policy). The guides must share the strong model's vocabulary (:func:`vocab_mismatch` says why they do not);
each model keeps its own KV cache.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .lm import CausalLM
from .policy import TransformersPolicy

__all__ = ["EFTPolicy", "eft_logprobs", "check_same_vocab", "vocab_mismatch"]


def vocab_mismatch(strong: CausalLM, others: Sequence[CausalLM]) -> Optional[str]:
    """Why EFT cannot mix ``strong`` with ``others`` (the first model whose tokenizer has another vocabulary,
    naming both tokenizers), or None when they share one vocabulary."""
    ref = strong.tokenizer.get_vocab()
    for lm in others:
        if lm.tokenizer.get_vocab() != ref:
            return (
                f"vocabulary differs: EFT adds the guides' next-token log-probabilities to the strong model's, "
                f"so it needs one vocabulary, but the strong model's tokenizer {_tokenizer_name(strong)} differs "
                f"from the guide's tokenizer {_tokenizer_name(lm)}; bon and cbs guide across vocabularies"
            )
    return None


def _tokenizer_name(lm: CausalLM) -> str:
    tok = lm.tokenizer
    return f"{tok.name_or_path or lm.name!r} ({len(tok)} tokens)"


def check_same_vocab(strong: CausalLM, others: Sequence[CausalLM]) -> None:
    """Raise ValueError unless every model's tokenizer has the strong model's vocabulary."""
    why = vocab_mismatch(strong, others)
    if why is not None:
        raise ValueError(why)


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

    def __init__(
        self,
        strong: CausalLM,
        tuned: Sequence[CausalLM],
        untuned: CausalLM,
        betas: Sequence[float],
        add_special_tokens=None,
    ):
        tuned = list(tuned)
        if len(betas) != len(tuned):
            raise ValueError(f"EFT got {len(betas)} betas for {len(tuned)} tuned models; pass one beta per tuned model")
        check_same_vocab(strong, [*tuned, untuned])
        super().__init__(strong, add_special_tokens)
        self.tuned, self.untuned, self.betas = tuned, untuned, [float(b) for b in betas]
        self.name = f"eft({strong.name})"

    def _sources(self):
        return [self.lm, *self.tuned, self.untuned], lambda logits: eft_logprobs(logits, self.betas)
