"""Token sampling as HF ``generate`` does it, with one random stream per prompt.

The logits warpers are transformers' own (temperature, then top-k, then top-p,
the order ``generate`` applies them), so a seeded draw here equals
``torch.manual_seed(seed); model.generate(do_sample=True, ...)`` on one prompt.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .config import SamplingConfig

__all__ = ["prompt_seed", "make_generators", "warp", "draw"]


def prompt_seed(seed: int, prompt: str) -> int:
    """A 63-bit seed derived from the run seed and the prompt text (batch-independent)."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generators(seeds: Sequence[int], device) -> list[torch.Generator]:
    """One torch.Generator per prompt, on ``device``, seeded with ``seeds[b]``."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def warp(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Apply temperature, top-k and top-p to logits [R, V] (float32); returns [R, V]."""
    if cfg.greedy:
        return logits
    if cfg.temperature != 1.0:
        logits = TemperatureLogitsWarper(cfg.temperature)(None, logits)
    if cfg.top_k > 0:
        logits = TopKLogitsWarper(top_k=cfg.top_k)(None, logits)
    if cfg.top_p < 1.0:
        logits = TopPLogitsWarper(top_p=cfg.top_p)(None, logits)
    return logits


def draw(
    logits: torch.Tensor,
    cfg: SamplingConfig,
    segments: Sequence[tuple[int, int, int]],
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Draw one token per row from warped ``logits`` [R, V]; returns token ids [R].

    ``segments`` lists (start, end, b): rows start..end-1 belong to prompt b and
    draw from ``generators[b]``, so a prompt's draws do not depend on the batch.
    """
    scores = warp(logits, cfg)
    if cfg.greedy:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    out = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
    for start, end, b in segments:
        out[start:end] = torch.multinomial(probs[start:end], num_samples=1, generator=generators[b]).squeeze(1)
    return out
