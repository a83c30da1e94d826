"""Log-likelihoods for lm-eval: the strong model exactly as lm-eval's ``hf`` backend computes
them, plus the guide tilt that weak-to-strong search samples toward.

CBS/BoN sample (approximately) from the tilted distribution

    p*(y | x)  proportional to  p_strong(y | x) * exp(beta * r(x, y)),
    r(x, y) = log p_tuned(y | x) - log p_untuned(y | x)

so ``loglikelihood(x, y)`` returns the unnormalised log p*(y|x):
``log p_strong(y|x) + beta * (log p_tuned(y|x) - log p_untuned(y|x))`` (plus
``rm_weight * RM(x, y)`` when a reward-model guide is given). The normaliser depends on x
only, so choices of one context rank exactly as under p* -- what multiple-choice tasks do.
EFT is a per-token product of experts, so there the answer is the EFT policy's own
normalised log-probability. Each guide reads the text with its own tokenizer and prompt
template, as the search scores candidates (:class:`w2s_eval.guide.GuideLM`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..eft import eft_logprobs
from ..guide import GuideLM
from ..lm import CausalLM, right_pad
from ..scorers import ImplicitValueScorer, WeightedSum

logger = logging.getLogger(__name__)

__all__ = ["TokenRequest", "score_tokens", "TiltTerm", "tilt_terms", "tilt", "guide_pairs", "split_space",
           "rolling_requests", "model_max_length", "eft_combiner"]


@dataclass
class TokenRequest:
    """Score ``cont`` after ``ctx`` (token ids); the model sees ``(ctx + cont)[-(max_len+1):][:-1]``."""

    ctx: list[int]
    cont: list[int]


def _windows(reqs: Sequence[TokenRequest], max_length: int) -> list[tuple[list[int], int]]:
    """Model input and continuation length per request, truncated from the left as lm-eval's hf does."""
    out = []
    for r in reqs:
        if not r.ctx or not r.cont:
            raise ValueError("loglikelihood needs a non-empty context and continuation (token ids)")
        if len(r.cont) > max_length:
            raise ValueError(f"continuation of {len(r.cont)} tokens exceeds the model's context of {max_length}")
        if len(r.ctx) + len(r.cont) > max_length + 1:
            logger.warning("context (%d) + continuation (%d) tokens exceed the model's length %d: truncating from "
                           "the left", len(r.ctx), len(r.cont), max_length)
        out.append(((r.ctx + r.cont)[-(max_length + 1):][:-1], len(r.cont)))
    return out


@torch.inference_mode()
def score_tokens(lms: Sequence[CausalLM], reqs: Sequence[TokenRequest], batch_size: int, max_length: int,
                 combine: Optional[Callable[[list[torch.Tensor]], torch.Tensor]] = None,
                 progress: Optional[Callable[[int], None]] = None) -> list[tuple[float, bool]]:
    """(sum of log-probs of the continuation, whether it is the greedy continuation) per request.

    One model: its log-softmax, as lm-eval's hf backend (right padding, float32 logits).
    Several models reading the same ids: ``combine(logits_list) -> log-probs`` (EFT).
    Longest requests first, ``batch_size`` at a time; results in the input order.
    """
    wins = _windows(reqs, max_length)
    order = sorted(range(len(reqs)), key=lambda i: -len(wins[i][0]) - wins[i][1])
    results: list[Optional[tuple[float, bool]]] = [None] * len(reqs)
    main = lms[0]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        inps = [wins[i][0] for i in idx]
        outs = []
        for lm in lms:
            ids, mask = right_pad(inps, lm.pad_id, lm.device)
            logits = lm.forward(ids, mask, None)
            lm.check_finite(logits.reshape(-1, logits.shape[-1]), mask.reshape(-1).bool())
            outs.append(logits.to(main.device))
        if combine is None:
            logp = torch.log_softmax(outs[0], dim=-1)
        else:
            vocab = min(o.shape[-1] for o in outs)
            logp = combine([o[..., :vocab] for o in outs])
        for row, i in enumerate(idx):
            inplen, contlen = len(wins[i][0]), wins[i][1]
            cont = torch.tensor(reqs[i].cont, dtype=torch.long, device=logp.device)
            lp = logp[row, inplen - contlen:inplen]
            greedy = bool((lp.argmax(dim=-1) == cont).all())
            results[i] = (float(lp.gather(-1, cont.unsqueeze(-1)).sum()), greedy)
        if progress is not None:
            progress(len(idx))
    return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------- guide tilt


@dataclass
class TiltTerm:
    """One additive term of the tilt: ``weight * (log p_plus(y|x) - log p_minus(y|x))`` for an
    implicit-value guide, or ``weight * scorer(x, y)`` for any other guide (a reward model)."""

    weight: float
    plus: Optional[GuideLM] = None
    minus: Optional[GuideLM] = None
    scorer: Optional[Callable] = None


def tilt_terms(scorer) -> list[TiltTerm]:
    """The terms of the engine's guide scorer (ImplicitValueScorer, WeightedSum, or another)."""
    if scorer is None:
        return []
    if isinstance(scorer, WeightedSum):
        terms = []
        for w, s in scorer.terms:
            for t in tilt_terms(s):
                t.weight *= w
                terms.append(t)
        return terms
    if isinstance(scorer, ImplicitValueScorer):
        return [TiltTerm(scorer.beta, scorer.tuned, scorer.untuned)]
    return [TiltTerm(1.0, scorer=scorer)]


def split_space(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of the context to the continuation (lm-eval's convention)."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def _prefix_token(lm: CausalLM) -> int:
    tok = lm.tokenizer
    if tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    return int(lm.eos_ids[0]) if lm.eos_ids else lm.pad_id


def guide_pairs(guide: GuideLM, pairs: Sequence[tuple[str, str]]) -> list[TokenRequest]:
    """Token requests of (context, continuation) text for one guide: its template applied to
    the context (an empty context becomes its BOS/EOS token), the continuation tokenized
    on its own -- as the guide scores a response during the search."""
    tok = guide.lm.tokenizer
    out = []
    for ctx, cont in pairs:
        ctx, cont = split_space(ctx, cont)
        ctx_ids = guide.prefix_ids(ctx) if ctx else [_prefix_token(guide.lm)]
        cont_ids = tok.encode(cont, add_special_tokens=False)
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} encodes to no tokens with guide {guide.lm.name!r}")
        out.append(TokenRequest(ctx_ids, cont_ids))
    return out


def rolling_requests(lm: CausalLM, text: str, max_length: int, prefix_token: Optional[int] = None,
                     encode: Optional[Callable[[str], list[int]]] = None) -> list[TokenRequest]:
    """lm-eval's disjoint rolling windows over ``text`` (each token predicted exactly once)."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    ids = encode(text) if encode is not None else lm.tokenizer.encode(text)
    prefix = _prefix_token(lm) if prefix_token is None else prefix_token
    return [TokenRequest(*make_disjoint_window(w))
            for w in get_rolling_token_windows(token_list=ids, prefix_token=prefix, max_seq_len=max_length, context_len=1)]


def model_max_length(lm: CausalLM) -> int:
    """The context length lm-eval's hf backend uses for this model."""
    from lm_eval.models.utils import resolve_max_length

    return resolve_max_length(lm.model.config, lm.tokenizer)


def tilt(terms: Sequence[TiltTerm], pairs: Sequence[tuple[str, str]], batch_size: int,
         rolling: bool = False) -> list[float]:
    """Sum of the tilt terms for each (context, continuation) pair (context "" when ``rolling``)."""
    pairs = [split_space(c, y) for c, y in pairs]
    total = [0.0] * len(pairs)
    logp_cache: dict[int, list[float]] = {}

    def guide_logp(guide: GuideLM) -> list[float]:
        if id(guide) not in logp_cache:
            limit = model_max_length(guide.lm)
            if rolling:
                reqs, owner = [], []
                for i, (_, text) in enumerate(pairs):
                    windows = rolling_requests(guide.lm, text, limit)
                    reqs += windows
                    owner += [i] * len(windows)
                vals = [0.0] * len(pairs)
                for i, (s, _) in zip(owner, score_tokens([guide.lm], reqs, batch_size, limit)):
                    vals[i] += s
            else:
                vals = [s for s, _ in score_tokens([guide.lm], guide_pairs(guide, pairs), batch_size, limit)]
            logp_cache[id(guide)] = vals
        return logp_cache[id(guide)]

    for term in terms:
        if term.weight == 0:
            continue
        if term.scorer is not None:
            ctxs = [c for c, _ in pairs]
            values = term.scorer(ctxs, [y for _, y in pairs], [False] * len(pairs))
            vals = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten()]
        else:
            plus, minus = guide_logp(term.plus), guide_logp(term.minus)
            vals = [a - b for a, b in zip(plus, minus)]
        total = [t + term.weight * v for t, v in zip(total, vals)]
    return total


def eft_combiner(betas: Sequence[float]) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """Combine logits (strong, tuned_1..n, untuned) into the EFT sampler's normalised log-probs."""
    return lambda logits: torch.log_softmax(eft_logprobs(logits, list(betas)), dim=-1)
