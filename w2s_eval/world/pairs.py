"""Preference pairs the paper's way, and how well models agree with them.

Per prefix, two continuations are sampled from the untuned guide and the gold reward
labels them under the Bradley-Terry model, p(a > b) = sigmoid(r_gold(a) - r_gold(b)):
either its most likely label, the higher-reward one (``labels="argmax"``, the world's
default), or a seeded draw from it (``labels="bradley-terry"``). Held-out pair accuracy
is always measured against the argmax label.
"""

from __future__ import annotations

import logging
import math
import random
from typing import TYPE_CHECKING, Callable, Sequence

from ..guide import GuideLM, ImplicitValueScorer
from ..lm import KVRows, left_pad
from ..scorers import RewardModelScorer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "sample_continuations",
    "extreme_pairs",
    "label_pairs",
    "implicit_pair_accuracy",
    "rm_pair_accuracy",
    "LABEL_MODES",
]

LABEL_MODES = ("bradley-terry", "argmax")


def _draw(
    logits: "torch.Tensor", banned: Sequence[int], temperature: float, top_k: int, generator: "torch.Generator"
) -> "torch.Tensor":
    """One token per row of ``logits`` [R, V] at ``temperature`` (top-k when ``top_k`` > 0), never a ``banned`` id.

    Inverse-CDF sampling from one uniform per row (``torch.multinomial`` on the CPU draws an exponential per
    vocabulary entry: 60% of the pair step's time at 49,152 tokens)."""
    import torch

    logits = logits / temperature
    logits[:, list(banned)] = -float("inf")
    ids = None
    if 0 < top_k < logits.shape[-1]:
        logits, ids = logits.topk(top_k, dim=-1)
    cdf = logits.softmax(-1).cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    # the first id whose cumulative probability reaches u; u > 0, so an id of probability 0 is never it
    pick = torch.searchsorted(cdf, u.clamp(min=torch.finfo(u.dtype).tiny)).clamp(max=cdf.shape[-1] - 1)
    return (pick if ids is None else ids.gather(-1, pick)).squeeze(-1)


def sample_continuations(
    lm,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
    temperature: float = 1.0,
    progress: bool = True,
    desc: str = "sampling",
    top_k: int = 0,
    stop_at_eos: bool = False,
) -> list[list[str]]:
    """``n`` continuations of exactly ``max_new_tokens`` tokens per prompt from ``lm`` (a CausalLM; end-of-text ids
    are never drawn, as ``generate`` does with ``min_new_tokens``); ``top_k=0``: no top-k cut. The draws depend on
    ``seed`` and ``batch_size``. ``stop_at_eos``: end-of-text ids may be drawn, and a continuation ends at its
    first one (at most ``max_new_tokens`` tokens; a chat model's answer that ends)."""
    import torch
    from tqdm.auto import tqdm

    if not temperature > 0:
        raise ValueError(f"sampling temperature must be > 0, got {temperature!r}")

    out: list[list[str]] = []
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress)
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        ids, mask = left_pad(
            [lm.tokenizer.encode(p, add_special_tokens=False) for p in chunk for _ in range(n)], lm.pad_id, lm.device
        )
        generator = torch.Generator(device=lm.device).manual_seed(seed * 1_000_003 + i)
        rows, new = KVRows(lm, ids.shape[0]), []
        logits = rows.feed(ids, mask)[:, -1]
        ended = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for t in range(max_new_tokens):
            new.append(_draw(logits, () if stop_at_eos else lm.eos_ids, temperature, top_k, generator))
            if stop_at_eos:
                new[-1] = torch.where(ended, torch.full_like(new[-1], lm.pad_id), new[-1])
                ended |= torch.isin(new[-1], torch.tensor(list(lm.eos_ids), device=ended.device))
                if bool(ended.all()):
                    break
            if t + 1 < max_new_tokens:
                logits = rows.feed(new[-1][:, None], torch.ones_like(new[-1][:, None]))[:, -1]
        drawn = torch.stack(new, 1)
        if stop_at_eos:
            drawn = [_until_eos(row, lm.eos_ids) for row in drawn.tolist()]
        texts = lm.tokenizer.batch_decode(drawn, skip_special_tokens=True)
        out.extend(texts[j * n : (j + 1) * n] for j in range(len(chunk)))
        bar.update(len(chunk))
    bar.close()
    return out


def _until_eos(ids: list, eos_ids) -> list:
    """``ids`` up to (without) the first end-of-text id."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i]
    return ids


def extreme_pairs(prompts: Sequence[str], samples: Sequence[Sequence[str]], gold: Callable) -> list[tuple[str, str]]:
    """Per prompt, its (highest, lowest) gold-reward continuation among its samples; two samples stay as drawn."""
    if all(len(s) == 2 for s in samples):
        return [(s[0], s[1]) for s in samples]
    rewards = gold([p for p, s in zip(prompts, samples) for _ in s], [c for s in samples for c in s])
    out, i = [], 0
    for s in samples:
        r = rewards[i : i + len(s)]
        i += len(s)
        out.append((s[max(range(len(s)), key=r.__getitem__)], s[min(range(len(s)), key=r.__getitem__)]))
    return out


def label_pairs(
    prompts: Sequence[str], pairs: Sequence[Sequence[str]], gold: Callable, labels: str, seed: int
) -> list[dict]:
    """Turn (a, b) continuation pairs into {prompt, chosen, rejected, r_chosen, r_rejected, p_chosen} rows."""
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    ra = gold(list(prompts), [p[0] for p in pairs])
    rb = gold(list(prompts), [p[1] for p in pairs])
    rng = random.Random(seed)
    rows = []
    for prompt, (a, b), x, y in zip(prompts, pairs, ra, rb):
        p_a = 1.0 / (1.0 + math.exp(-(x - y)))
        a_wins = rng.random() < p_a if labels == "bradley-terry" else x >= y
        chosen, rejected, rc, rr = (a, b, x, y) if a_wins else (b, a, y, x)
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "r_chosen": rc,
                "r_rejected": rr,
                "p_chosen": p_a if a_wins else 1.0 - p_a,
            }
        )
    return rows


def _accuracy(margins: Sequence[float], pairs: Sequence[dict]) -> dict:
    """Agreement of ``margins`` (chosen minus rejected score) with the gold argmax label."""
    hits = n = 0
    for m, p in zip(margins, pairs):
        if p["r_chosen"] == p["r_rejected"]:
            continue
        gold_sign = p["r_chosen"] > p["r_rejected"]
        hits += (m > 0) == gold_sign
        n += 1
    return {"pair_accuracy": round(hits / n, 4) if n else None, "pairs": n}


def implicit_pair_accuracy(tuned, untuned, pairs: Sequence[dict], beta: float = 1.0) -> dict:
    """Pair accuracy of the implicit value beta*(log p_tuned - log p_untuned) (CausalLMs, GuideLM scoring)."""

    scorer = ImplicitValueScorer(GuideLM(tuned, incremental=False), GuideLM(untuned, incremental=False), beta)
    prompts = [p["prompt"] for p in pairs]
    flags = [False] * len(pairs)
    c = _batched(scorer, prompts, [p["chosen"] for p in pairs], flags)
    r = _batched(scorer, prompts, [p["rejected"] for p in pairs], flags)
    return _accuracy([a - b for a, b in zip(c, r)], pairs)


def rm_pair_accuracy(model, tokenizer, pairs: Sequence[dict]) -> dict:
    """Pair accuracy of a one-output reward model as :class:`RewardModelScorer` reads it."""

    scorer = RewardModelScorer(model, tokenizer, name="reward_model")
    prompts = [p["prompt"] for p in pairs]
    flags = [False] * len(pairs)
    c = _batched(scorer, prompts, [p["chosen"] for p in pairs], flags)
    r = _batched(scorer, prompts, [p["rejected"] for p in pairs], flags)
    return _accuracy([a - b for a, b in zip(c, r)], pairs)


def _batched(scorer, prompts, responses, flags, batch: int = 32) -> list[float]:
    out: list[float] = []
    for i in range(0, len(prompts), batch):
        out += scorer(prompts[i : i + batch], responses[i : i + batch], flags[i : i + batch]).tolist()
    return out
