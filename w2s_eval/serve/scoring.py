"""Per-token log-probabilities for ``echo`` / ``logprobs``: the tilted log-likelihood the
lm-eval backend computes, spread over tokens so that any suffix sums to it.

For token ids ``x_0 .. x_{n-1}`` and every split ``j`` (context ``x_<j``, continuation
``x_>=j``), lm-eval's ``w2s`` backend returns

    S(j) = sum_{i >= j} log p_strong(x_i | x_<i)  +  T(j),
    T(j) = the guides' tilt of (text(x_<j), text(x_>=j))   (see :mod:`w2s_eval.tilt`)

An OpenAI client sums ``token_logprobs[ctxlen:]`` itself and the server does not know
``ctxlen``; so token ``i`` gets ``log p_strong(x_i | x_<i) + T(i) - T(i+1)`` (``T(n) = 0``),
whose suffix sums are exactly ``S(j)`` for every split. The tilt of every split costs one
guide evaluation per token (quadratic in the prompt length; meant for evaluation prompts).
Alternatives in ``top_logprobs`` carry the strong model's log-probability plus the same
position's tilt increment, so their order (and a client's ``is_greedy``) is the strong
model's, as the lm-eval backend's ``is_greedy``. EFT has no tilt: its tokens carry the EFT
sampler's own normalised log-probabilities. Base sampling has no tilt either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..config import Method
from ..lm import right_pad
from ..policy import shared_vocab
from ..tilt import Tilt, eft_combiner, eft_parts, model_max_length, terms_for

__all__ = ["TokenLogprobs", "score_sequences"]


@dataclass
class TokenLogprobs:
    """OpenAI's ``logprobs`` object for positions ``start..`` of one token sequence."""

    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }


def _models(engine, method: Method):
    """The models whose next-token distributions score tokens, and how they combine (EFT: its mix)."""
    lms, betas = eft_parts(engine, method)
    if lms:
        return [engine.policy.lm, *lms], eft_combiner(betas)
    return [engine.policy.lm], lambda logits: torch.log_softmax(logits[0], dim=-1)


@torch.inference_mode()
def _strong_logprobs(engine, method: Method, seqs: list[list[int]], top_n: int):
    """Per sequence: log p(x_i | x_<i) [n] (index 0 unused) and the top ``top_n`` (id, log p) per position."""
    lms, combine = _models(engine, method)
    ids, mask = right_pad(seqs, lms[0].pad_id, lms[0].device)
    outs = []
    for lm in lms:
        logits = lm.forward(ids.to(lm.device), mask.to(lm.device), None)
        lm.check_finite(logits.reshape(-1, logits.shape[-1]), mask.reshape(-1).bool().to(lm.device))
        outs.append(logits.to(lms[0].device))
    vocab = shared_vocab(lms)  # the EFT sampler's (padded embedding rows are no token)
    logp = combine([o[..., :vocab] for o in outs])  # [B, T, V]
    result = []
    for b, seq in enumerate(seqs):
        n = len(seq)
        target = torch.tensor(seq[1:], dtype=torch.long, device=logp.device)
        own = logp[b, : n - 1].gather(-1, target.unsqueeze(-1)).squeeze(-1).tolist()
        top_v, top_i = logp[b, : n - 1].topk(max(top_n, 1), dim=-1)
        tops = [list(zip(ids_row, vals_row)) for ids_row, vals_row in zip(top_i.tolist(), top_v.tolist())]
        result.append(([0.0] + own, [None] + tops))
    return result


def _tilts(tilt: Tilt, tok, seq: list[int], start: int) -> list[float]:
    """T(j) for j = start .. n-1, and T(n) = 0."""
    n = len(seq)
    if not tilt or start >= n:
        return [0.0] * (n - start + 1)
    pairs = [
        (tok.decode(seq[:j], skip_special_tokens=True), tok.decode(seq[j:], skip_special_tokens=True))
        for j in range(start, n)
    ]
    scored = [i for i, (_, cont) in enumerate(pairs) if cont]  # a suffix of special tokens (EOS) has no text: 0
    # one call for all splits: they usually give a guide the same token sequence, which the Tilt's HFLMs score
    # without lm-eval's logits cache (that would use one split's continuation length for all of them)
    values = dict(zip(scored, tilt([pairs[i] for i in scored]))) if scored else {}
    return [values.get(i, 0.0) for i in range(len(pairs))] + [0.0]


def score_sequences(
    engine,
    method: Method,
    seqs: Sequence[list[int]],
    starts: Sequence[int],
    top_n: int,
    batch_size: int = 8,
    tilt: Optional[Tilt] = None,
) -> list[TokenLogprobs]:
    """Logprobs of positions ``starts[b]..`` of each token sequence (position 0 has none: null).

    ``tilt``: the method's :class:`Tilt` when the caller keeps one (it holds lm-eval wrappers of the guide
    models, no results). The strong model must be local (a served strong model gives no full distributions).
    """
    if not hasattr(engine.policy, "lm"):
        raise ValueError(
            "echo/logprobs need the strong model's token log-probabilities: serve a local strong "
            "model (--strong), not --strong-endpoint"
        )
    tok = engine.policy.lm.tokenizer
    limit = model_max_length(engine.policy.lm)
    tilt = tilt if tilt is not None else Tilt(terms_for(engine, method), batch_size)
    out = []
    for i in range(0, len(seqs), batch_size):
        part = [list(s) for s in seqs[i : i + batch_size]]
        for s in part:
            if len(s) > limit:
                raise ValueError(f"a sequence of {len(s)} tokens exceeds the strong model's context of {limit}")
        strong = _strong_logprobs(engine, method, part, top_n)
        for seq, start, (own, tops) in zip(part, starts[i : i + batch_size], strong):
            t = _tilts(tilt, tok, seq, max(start, 1))
            out.append(_assemble(tok, seq, start, own, tops, t, top_n))
    return out


def _assemble(tok, seq, start, own, tops, t, top_n) -> TokenLogprobs:
    pieces = [tok.decode([x]) for x in seq]
    offsets, pos = [], sum(len(p) for p in pieces[:start])
    tokens, values, top = [], [], []
    for i in range(start, len(seq)):
        offsets.append(pos)
        pos += len(pieces[i])
        tokens.append(pieces[i])
        if i == 0:
            values.append(None)
            top.append(None)
            continue
        shift = t[i - max(start, 1)] - t[i - max(start, 1) + 1]
        values.append(own[i] + shift)
        alts: dict[str, float] = {}
        for tid, v in tops[i][:top_n]:
            key = pieces[i] if tid == seq[i] else tok.decode([tid])
            alts[key] = max(alts.get(key, -float("inf")), v + shift)
        alts[pieces[i]] = max(alts.get(pieces[i], -float("inf")), values[-1])
        top.append(alts)
    return TokenLogprobs(tokens, values, top, offsets)
