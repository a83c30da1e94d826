"""The strong-model engine interface the search uses, and its transformers engine.

A :class:`Policy` starts a :class:`Session` over a batch of prompts. The search
then calls ``session.extend(parents, k, max_tokens)`` once per round: every row
named in ``parents`` is extended by ``k`` sampled continuations of at most
``max_tokens`` tokens (None = until the response ends). The children become the
session's rows, in order (children of ``parents[0]`` first), and the next call
names its parents among them. The interface speaks text and flags only, so a
strong model behind another engine (an OpenAI-compatible server) fits it too.

:class:`TransformersPolicy` runs a local model: all rows of all prompts in one
forward pass per token (left padding), the KV cache kept across rounds and
reordered with ``Cache.reorder_cache``, one random stream per prompt.

Sampling is HF ``generate``'s: transformers' own logits warpers (temperature, then top-k, then top-p, the order
``generate`` applies them), so a seeded draw here equals ``torch.manual_seed(seed); model.generate(do_sample=True)``
on one prompt.

EFT, a policy over the strong model and the guides, is :mod:`w2s_eval.eft`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .config import SamplingConfig, context_error
from .flops import Cost, add_costs, flops_of
from .lm import CausalLM, KVRows, left_pad

logger = logging.getLogger(__name__)

# positions of room the strong cache keeps ahead (w2s_eval.kvroom): all of a short response, and for a long one a
# copy of the cache every _ROOM tokens instead of one every token, without reserving memory for tokens never drawn
_ROOM = 128

__all__ = [
    "Continuation",
    "Session",
    "Policy",
    "TransformersPolicy",
    "cut_at_stop",
    "prompt_seed",
    "choice_seed",
    "make_generators",
    "warp",
    "draw",
    "shared_vocab",
]


# ----------------------------------------------------------------------------- sampling (as HF generate)


def prompt_seed(seed: int, prompt: str) -> int:
    """A 63-bit seed derived from the run seed and the prompt text (batch-independent)."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def choice_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of the ``index``-th sample of one prompt (lm-eval repeats, OpenAI ``n``): 0 is the prompt's own."""
    return prompt_seed(seed, prompt if index == 0 else f"{prompt}\x00repeat{index}")


def make_generators(seeds: Sequence[int], device) -> list[torch.Generator]:
    """One torch.Generator per prompt, on ``device``, seeded with ``seeds[b]``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


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


@dataclass
class Continuation:
    """One row after a round: the whole response so far and its state.

    ended: the response finished naturally (EOS or a stop string);
    done: it will not be extended (ended, or max_new_tokens reached).
    """

    prompt_index: int
    text: str
    ended: bool
    done: bool
    n_tokens: int  # response length in strong-model tokens
    token_ids: list[int] = field(default_factory=list, repr=False)


class Session(Protocol):
    """Rows of one batch of prompts on a strong engine (see the module docstring)."""

    def extend(self, parents: Sequence[int], k: int, max_tokens: Optional[int]) -> list[Continuation]: ...

    @property
    def strong_tokens(self) -> list[int]:
        """Strong-model token forwards so far, per prompt."""
        ...

    @property
    def guide_tokens(self) -> list[int]:
        """Token forwards of guide models the session runs itself (EFT's guides), per prompt; zeros otherwise."""
        ...

    @property
    def costs(self) -> list[dict[str, Cost]]:
        """Per prompt: {model name: :class:`~w2s_eval.flops.Cost`} (optional: else strong_tokens, FLOPs unknown)."""
        ...


class Policy(Protocol):
    """A strong-model engine: ``start`` a session over prompts with per-prompt seeds."""

    name: str

    def start(self, prompts: Sequence[str], cfg: SamplingConfig, seeds: Sequence[int]) -> Session: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string; return (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def encode_prompt(tok, prompt: str, add_special_tokens: Optional[bool], name: str) -> list[int]:
    """Token ids of a prompt for the model ``name`` with tokenizer ``tok``; special tokens as the tokenizer adds
    them unless told, and no second BOS when the text already starts with it (a chat template's)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"empty prompt given to {name!r}: every prompt needs at least one character")
    kwargs = {}
    if add_special_tokens is not None:
        kwargs["add_special_tokens"] = add_special_tokens
    elif tok.bos_token and prompt.startswith(tok.bos_token):
        kwargs["add_special_tokens"] = False
    ids = tok.encode(prompt, **kwargs)
    if not ids:
        raise ValueError(f"prompt {prompt[:40]!r} encodes to no tokens with {name!r}'s tokenizer")
    return ids


def fit_context(ids: list[int], lm: CausalLM, cfg: SamplingConfig) -> list[int]:
    """Check prompt + max_new_tokens fits the context (:func:`context_error`); left-truncate if cfg says so."""
    error = context_error(len(ids), cfg.max_new_tokens, lm.max_length, model=repr(lm.name), truncation=True)
    if error is None:
        return ids
    room = lm.max_length - cfg.max_new_tokens
    if cfg.truncation == "left" and room > 0:
        logger.warning(
            "prompt of %d tokens left-truncated to %d to fit %s's context of %d", len(ids), room, lm.name, lm.max_length
        )
        return ids[-room:]
    raise ValueError(error)


class TransformersPolicy:
    """The strong model as a local transformers model (see the module docstring).

    ``add_special_tokens``: None uses the tokenizer's default (as HF and lm-eval do).
    """

    def __init__(self, lm: CausalLM, add_special_tokens: Optional[bool] = None):
        self.lm = lm
        self.name = lm.name
        self.add_special_tokens = add_special_tokens

    def _ids(self, prompt: str) -> list[int]:
        return encode_prompt(self.lm.tokenizer, prompt, self.add_special_tokens, self.lm.name)

    def encode(self, prompt: str, cfg: SamplingConfig) -> list[int]:
        return fit_context(self._ids(prompt), self.lm, cfg)

    def fit_error(self, prompt: str, max_new_tokens: int, flag: str = "max_new_tokens") -> Optional[str]:
        """None when ``prompt`` plus ``max_new_tokens`` fits the model's context, else the error that names the
        setting as ``flag`` (:func:`~w2s_eval.config.context_error`; no truncation: the caller has none)."""
        return context_error(len(self._ids(prompt)), max_new_tokens, self.lm.max_length, flag)

    def _sources(self) -> tuple[list[CausalLM], Callable[[list[torch.Tensor]], torch.Tensor]]:
        """The models whose logits make the next-token distribution, and how to combine them."""
        return [self.lm], lambda logits: logits[0]

    def start(self, prompts: Sequence[str], cfg: SamplingConfig, seeds: Sequence[int]) -> "LocalSession":
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one seed per prompt")
        lms, combine = self._sources()
        return LocalSession(lms, combine, [self.encode(p, cfg) for p in prompts], cfg, seeds)


class LocalSession:
    """Rows of a batch of prompts on local models (one or several sharing a vocabulary).

    Row state: each model's KV cache holds prompt + response[:-1] (left-padded);
    ``pending[r]`` is the last token, not yet fed. Sampling the next chunk starts by
    feeding it, so no position is ever run twice.
    """

    def __init__(self, lms: list[CausalLM], combine, prompt_ids: list[list[int]], cfg: SamplingConfig, seeds):
        self.lms, self.combine, self.cfg = lms, combine, cfg
        self.main = lms[0]
        self.device = self.main.device
        self.tok = self.main.tokenizer
        self.eos = set(self.main.eos_ids)
        self.vocab = shared_vocab(lms)
        self.generators = make_generators(seeds, self.device)
        b = len(prompt_ids)
        self.row_prompt = list(range(b))
        self.resp: list[list[int]] = [[] for _ in range(b)]
        self.done = [False] * b
        self.kvs = [KVRows(lm, b, room=min(cfg.max_new_tokens, _ROOM)) for lm in lms]
        self.prompt_len = [len(ids) for ids in prompt_ids]
        self._costs = [[Cost() for _ in range(b)] for _ in lms]  # [model][prompt]: token forwards and FLOPs
        heads = [ids[:-1] for ids in prompt_ids]
        for kv, lm, costs in zip(self.kvs, lms, self._costs):
            if any(heads):
                kv.feed(*left_pad(heads, lm.pad_id, kv.mask.device))
            for cost, h in zip(costs, heads):
                cost.add_prefill(len(h), flops_of(lm.shape, len(h)))
        self.pending = torch.tensor([ids[-1] for ids in prompt_ids], dtype=torch.long, device=self.device)
        self.stop_window = 4 * max((len(s) for s in cfg.stop), default=0) + 2

    @property
    def strong_tokens(self) -> list[int]:
        return [c.tokens for c in self._costs[0]]

    @property
    def guide_tokens(self) -> list[int]:
        """Token forwards of the other models (EFT guides), per prompt."""
        return [sum(costs[b].tokens for costs in self._costs[1:]) for b in range(len(self.prompt_len))]

    @property
    def costs(self) -> list[dict[str, Cost]]:
        """Per prompt: {model name: Cost} of the strong model and the models mixed with it (EFT's guides)."""
        out: list[dict[str, Cost]] = [{} for _ in self.prompt_len]
        for lm, costs in zip(self.lms, self._costs):
            for mine, cost in zip(out, costs):
                add_costs(mine, {lm.name: cost})
        return out

    def _select(self, parents: Sequence[int], k: int) -> None:
        if any(self.done[p] for p in parents):
            raise ValueError("extend() was asked to extend a finished row")
        rows = [p for p in parents for _ in range(k)]
        if any(self.row_prompt[a] > self.row_prompt[b] for a, b in zip(rows, rows[1:])):
            raise ValueError("parents must be grouped by prompt, in prompt order")
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        for kv in self.kvs:
            kv.select(idx)
        self.pending = self.pending.index_select(0, idx)
        self.row_prompt = [self.row_prompt[p] for p in rows]
        self.resp = [list(self.resp[p]) for p in rows]
        self.done = [False] * len(rows)

    def _segments(self) -> list[tuple[int, int, int]]:
        segs, start = [], 0
        for r in range(1, len(self.row_prompt) + 1):
            if r == len(self.row_prompt) or self.row_prompt[r] != self.row_prompt[start]:
                segs.append((start, r, self.row_prompt[start]))
                start = r
        return segs

    def _next_logits(self, active: torch.Tensor) -> torch.Tensor:
        """Feed the pending tokens of active rows to every model; combined logits [R, V]."""
        mask = active.long().unsqueeze(1)
        outs = []
        for lm, kv in zip(self.lms, self.kvs):
            logits = kv.feed(self.pending.unsqueeze(1), mask)[:, -1]
            lm.check_finite(logits, active.to(logits.device))
            outs.append(logits[..., : self.vocab].to(self.device))
        return self.combine(outs)

    def extend(self, parents: Sequence[int], k: int, max_tokens: Optional[int]) -> list[Continuation]:
        """Extend each parent row by ``k`` continuations of at most ``max_tokens`` tokens."""
        self._select(parents, k)
        n_rows = len(self.row_prompt)
        start = [len(r) for r in self.resp]
        chunk_done = [n >= self.cfg.max_new_tokens for n in start]
        ended, eos_end = [False] * n_rows, [False] * n_rows
        segments = self._segments()
        steps = self.cfg.max_new_tokens if max_tokens is None else max_tokens
        live = [r for r in range(n_rows) if not chunk_done[r]]
        for _ in range(steps):
            if not live:
                break
            active = torch.zeros(n_rows, dtype=torch.bool)
            active[live] = True
            logits = self._next_logits(active.to(self.device))
            tokens = draw(logits, self.cfg, segments, self.generators).tolist()
            self.pending = torch.tensor(tokens, dtype=torch.long, device=self.device)
            self._take(live, tokens, eos_end, chunk_done)
            if self.cfg.stop:
                self._check_stops(live, ended, chunk_done)
            live = [r for r in live if not chunk_done[r]]
        self._count(start, eos_end)
        ended = [a or b for a, b in zip(ended, eos_end)]
        return self._continuations(ended, chunk_done)

    def _take(self, live: list[int], tokens: list[int], eos_end: list[bool], chunk_done: list[bool]) -> None:
        """Append the drawn token of each live row (an EOS ends the row instead: ``eos_end``)."""
        eos, most, resp = self.eos, self.cfg.max_new_tokens, self.resp
        for r in live:
            t = tokens[r]
            if t in eos:
                eos_end[r] = chunk_done[r] = True
                continue
            resp[r].append(t)
            if len(resp[r]) >= most:
                chunk_done[r] = True

    def _count(self, start: list[int], eos_end: list[bool]) -> None:
        """Add this chunk's token forwards (and their FLOPs) per prompt: a row was fed once a step while live, which
        is once per token it appended plus once for an EOS it drew (drawn, never appended, and its last step)."""
        for r, b in enumerate(self.row_prompt):
            n = len(self.resp[r]) - start[r] + eos_end[r]
            before = self.prompt_len[b] - 1 + start[r]  # real positions in the row's cache when the chunk began
            for lm, costs in zip(self.lms, self._costs):
                costs[b].add_forward(n, flops_of(lm.shape, n, before))

    def _check_stops(self, live: list[int], ended: list[bool], chunk_done: list[bool]) -> None:
        tails = self.tok.batch_decode([self.resp[r][-self.stop_window :] for r in live], skip_special_tokens=True)
        for r, tail in zip(live, tails):
            if not ended[r] and any(s in tail for s in self.cfg.stop):
                ended[r] = chunk_done[r] = True

    def _continuations(self, ended: list[bool], chunk_done: list[bool]) -> list[Continuation]:
        texts = self.tok.batch_decode(self.resp, skip_special_tokens=True)
        out = []
        for r, text in enumerate(texts):
            text, stopped = cut_at_stop(text, self.cfg.stop)
            is_ended = ended[r] or stopped
            done = is_ended or len(self.resp[r]) >= self.cfg.max_new_tokens
            self.done[r] = done
            out.append(Continuation(self.row_prompt[r], text, is_ended, done, len(self.resp[r]), list(self.resp[r])))
        return out


def shared_vocab(lms: Sequence[CausalLM]) -> Optional[int]:
    """How many logits models that mix their next-token distributions (EFT) keep: the shortest tokenizer's
    length (embedding rows beyond a tokenizer, padding in e.g. Qwen's models, are no token); None for one model.
    Every mix of logits cuts them with ``logits[..., :shared_vocab(lms)]``."""
    return min(len(lm.tokenizer) for lm in lms) if len(lms) > 1 else None
