"""A causal LM held by composition, and batched rows of its KV cache.

:class:`CausalLM` holds a transformers model and its tokenizer and exposes the
one forward pass the engine needs. :class:`KVRows` is a batch of rows (one per
beam) with a KV cache and a 2-D attention mask in which 0 marks left padding or
a *hole* (a cached position that a row no longer uses). Rows are reordered,
duplicated or dropped through the public ``Cache.reorder_cache`` API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import DynamicCache

logger = logging.getLogger(__name__)

__all__ = ["CausalLM", "KVRows", "left_pad"]


@dataclass
class CausalLM:
    """A causal language model, its tokenizer, and a name for messages.

    ``max_length`` is the model's context (None when the config does not say).
    """

    model: Any
    tokenizer: Any
    name: str = "model"

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def max_length(self) -> Optional[int]:
        cfg = self.model.config.get_text_config(decoder=True)
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """End-of-sequence ids from the generation config, else the tokenizer's."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return ()
        return tuple(ids) if isinstance(ids, (list, tuple)) else (int(ids),)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.eos_ids[0] if self.eos_ids else 0
        return int(pad)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Optional[DynamicCache]) -> torch.Tensor:
        """Run the model on new tokens; return float32 logits.

        input_ids: [R, T] new tokens; attention_mask: [R, P+T] over cached (P) and new
        positions; cache: holds P positions per row and is extended in place.
        Returns logits [R, T, V]. Position ids count real tokens only, so left padding
        and holes do not shift positions.
        """
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        logits = out.logits.float()
        return logits

    def check_finite(self, logits: torch.Tensor, valid: Optional[torch.Tensor] = None) -> None:
        """Raise if logits [R, V] of real (``valid``) rows hold NaN or inf (a row sum is
        non-finite exactly when the row holds a NaN or an inf, for logits of sane size)."""
        bad = ~torch.isfinite(logits.sum(dim=-1))
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            raise FloatingPointError(
                f"model {self.name!r} produced NaN/inf logits; try dtype=float32 (half precision can "
                "overflow), or check the weights of this model"
            )


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ids [R, T] and mask [R, T] (1 = real token)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long).reshape(len(seqs), width)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long).reshape(len(seqs), width)
    return ids.to(device), mask.to(device)


def right_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ids [R, T] and mask [R, T] (1 = real token)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long).reshape(len(seqs), width)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long).reshape(len(seqs), width)
    return ids.to(device), mask.to(device)


class KVRows:
    """A batch of R rows of one model's KV cache with its attention mask [R, P].

    ``tokens_fed`` counts the real (unmasked) token positions this object has run
    through the model, the unit of the compute counters.
    """

    def __init__(self, lm: CausalLM, n_rows: int = 0):
        self.lm = lm
        self.cache = DynamicCache()
        self.mask = torch.zeros((n_rows, 0), dtype=torch.long, device=lm.device)
        self.tokens_fed = 0

    @property
    def n_rows(self) -> int:
        return self.mask.shape[0]

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` [R'] (indices into the current rows; repeats allowed), in that order."""
        rows = rows.to(self.mask.device)
        self.mask = self.mask.index_select(0, rows)
        if self.cache.get_seq_length() > 0:
            self.cache.reorder_cache(rows)

    def feed(self, input_ids: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
        """Append tokens ``input_ids`` [R, T] (``new_mask`` [R, T], 0 = padding); return logits [R, T, V]."""
        self.mask = torch.cat([self.mask, new_mask.to(self.mask.device)], dim=1)
        logits = self.lm.forward(input_ids.to(self.mask.device), self.mask, self.cache)
        self.tokens_fed += int(new_mask.sum())
        return logits

    def forget_after(self, keep: torch.Tensor) -> None:
        """Turn each row's real positions beyond its first ``keep[r]`` into holes."""
        seen = self.mask.cumsum(-1)
        self.mask = self.mask * (seen <= keep.to(self.mask.device).unsqueeze(1)).long()
