"""Log-likelihoods of text under the strong model (lm-eval's own ``hf`` backend, HFLM, over the loaded model) plus
the guide tilt that weak-to-strong search samples toward (docs/lm-eval.md, "loglikelihood: what the number means"):

    log p*(y | x) = log p_strong(y | x) + beta * (log p_tuned(y | x) - log p_untuned(y | x)) [+ rm_weight * RM(x, y)]

unnormalised; the normaliser depends on x only, so the choices of one context rank exactly as under p*. For EFT
the answer is the EFT policy's own normalised log-probability (:class:`LoadedHFLM` mixes the next-token
distributions, as lm-eval's ``hf_steered`` steers HFLM). Each guide reads the text with its own tokenizer and
prompt template, as the search scores candidates. The lm-eval backend and ``w2s-eval serve`` (its prompt
logprobs) both use it; it needs lm-eval (the ``[lm-eval]`` extra).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch

from .extras import require

require("lm_eval", "lm-eval")
from lm_eval.api.instance import Instance  # noqa: E402  (after the check that names the extra)
from lm_eval.models.huggingface import HFLM  # noqa: E402

from .eft import eft_logprobs  # noqa: E402
from .guide import GuideLM  # noqa: E402
from .lm import CausalLM, split_on_oom  # noqa: E402
from .policy import shared_vocab  # noqa: E402

__all__ = [
    "LoadedHFLM",
    "Tilt",
    "split_space",
    "guide_requests",
    "eft_parts",
    "terms_for",
    "eft_combiner",
    "model_max_length",
]


class LoadedHFLM(HFLM):
    """lm-eval's ``hf`` backend over an already loaded :class:`CausalLM` (HFLM takes a preloaded model).

    ``eft_lms``/``eft_betas``: the next-token distribution becomes EFT's mix of this model and those
    (same vocabulary); without them HFLM is unchanged, so its numbers are ``--model hf``'s by construction.
    ``accelerator``: the data-parallel ranks (HFLM sets none up for a preloaded model).
    ``logits_cache``: HFLM's sharing of one forward among requests of equal context + continuation[:-1]
    (on by default, as in ``--model hf``; it scores them all with one request's split point, so the guides'
    wrappers turn it off: the splits of one text give a guide the same tokens).
    """

    def __init__(
        self,
        lm: CausalLM,
        batch_size: int,
        accelerator=None,
        eft_lms: Sequence[CausalLM] = (),
        eft_betas: Sequence[float] = (),
        logits_cache: bool = True,
    ):
        hf_logger = logging.getLogger("lm_eval.models.huggingface")
        level = hf_logger.level
        hf_logger.setLevel(logging.ERROR)  # its warnings about a preloaded model are about launching, handled here
        try:
            super().__init__(
                pretrained=lm.model,
                tokenizer=lm.tokenizer,
                backend="causal",
                batch_size=batch_size,
                logits_cache=logits_cache,
            )
        finally:
            hf_logger.setLevel(level)
        self.eft_lms, self.eft_betas = tuple(eft_lms), [float(b) for b in eft_betas]
        self.eft_vocab = shared_vocab([lm, *self.eft_lms])  # the EFT sampler's (padded embedding rows are no token)
        self.lm_name, self._oom_rows = lm.name, None  # rows per forward that fitted after an OOM split
        self._use_ranks(accelerator)

    def _use_ranks(self, accelerator) -> None:
        """accelerate's data-parallel ranks (HFLM sets none up for a preloaded model); HFLM's collectives use them."""
        if accelerator is not None and accelerator.num_processes > 1:
            self.accelerator = accelerator
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes

    def _model_call(self, inps, attn_mask=None, labels=None):
        """HFLM's causal forward (``attn_mask``/``labels`` are seq2seq's, never given here), EFT-mixed when guides
        are given, rerun on halves of the rows when it runs out of memory (:func:`w2s_eval.lm.split_on_oom`;
        each row's logits do not depend on the others)."""

        def run(lo: int, hi: int):
            logits = HFLM._model_call(self, inps[lo:hi])
            if not self.eft_lms:
                return logits
            with torch.no_grad():
                outs = [logits.float()] + [
                    lm.model(inps[lo:hi].to(lm.device)).logits.float().to(logits.device) for lm in self.eft_lms
                ]
            return eft_combiner(self.eft_betas)([o[..., : self.eft_vocab] for o in outs])

        outs, self._oom_rows = split_on_oom(run, inps.shape[0], name=f"strong:{self.lm_name}", rows=self._oom_rows)
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def eft_combiner(betas: Sequence[float]) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """Combine logits (strong, tuned_1..n, untuned) into the EFT sampler's normalised log-probs."""
    return lambda logits: torch.log_softmax(eft_logprobs(logits, list(betas)), dim=-1)


def model_max_length(lm: CausalLM) -> int:
    """The context length lm-eval's hf backend uses for this model."""
    from lm_eval.models.utils import resolve_max_length

    return resolve_max_length(lm.model.config, lm.tokenizer)


def split_space(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of the context to the continuation (lm-eval's convention)."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def guide_requests(guide: GuideLM, prefix_token: int, pairs: Sequence[tuple[str, str]]) -> list:
    """HFLM token requests ``((ctx, cont), ctx_ids, cont_ids)`` of (context, continuation) text for one guide:
    its template applied to the context (an empty context becomes ``prefix_token``), the continuation
    tokenized on its own -- as the guide scores a response during the search."""
    out = []
    for ctx, cont in pairs:
        ctx_ids = guide.prefix_ids(ctx) if ctx else [prefix_token]
        cont_ids = guide.lm.tokenizer.encode(cont, add_special_tokens=False)
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} encodes to no tokens with guide {guide.lm.name!r}")
        out.append(((ctx, cont), ctx_ids, cont_ids))
    return out


class Tilt:
    """Sum of an engine's guide terms (``Engine.guides``: weight, kind, scorer) for (context, continuation)
    pairs: an ``implicit`` term is ``weight * beta * (log p_tuned - log p_untuned)`` of its two guide LMs
    (log-probs from HFLM over each), any other term ``weight * scorer(contexts, continuations)``."""

    def __init__(self, guides: Sequence, batch_size: int):
        self.guides = [g for g in guides if g.weight != 0]
        self.batch_size = batch_size
        self._hf: dict[int, LoadedHFLM] = {}  # one HFLM wrapper per guide model (no results kept, no logits cache)

    def __bool__(self) -> bool:
        return bool(self.guides)

    def _hflm(self, lm: CausalLM) -> LoadedHFLM:
        if id(lm) not in self._hf:
            self._hf[id(lm)] = LoadedHFLM(lm, self.batch_size, logits_cache=False)
        return self._hf[id(lm)]

    def _logp(self, guide: GuideLM, pairs: list[tuple[str, str]], rolling: bool) -> list[float]:
        hf = self._hflm(guide.lm)
        if rolling:
            reqs = [Instance("loglikelihood_rolling", {}, (y,), i) for i, (_, y) in enumerate(pairs)]
            return hf.loglikelihood_rolling(reqs, disable_tqdm=True)
        reqs = guide_requests(guide, hf.prefix_token_id, pairs)
        return [lp for lp, _ in hf._loglikelihood_tokens(reqs, disable_tqdm=True)]

    def __call__(self, pairs: Sequence[tuple[str, str]], rolling: bool = False) -> list[float]:
        """The tilt of each pair (``rolling``: whole texts, context "")."""
        pairs = [split_space(c, y) for c, y in pairs]
        total = [0.0] * len(pairs)
        logp: dict[int, list[float]] = {}
        for g in self.guides:
            if g.kind == "implicit":
                plus, minus = g.scorer.tuned, g.scorer.untuned
                for guide in (plus, minus):
                    if id(guide) not in logp:
                        logp[id(guide)] = self._logp(guide, pairs, rolling)
                weight = g.weight * g.scorer.beta
                vals = [a - b for a, b in zip(logp[id(plus)], logp[id(minus)])]
            else:
                weight = g.weight
                scores = g.scorer([c for c, _ in pairs], [y for _, y in pairs], [False] * len(pairs))
                vals = torch.as_tensor(scores, dtype=torch.float64).flatten().tolist()
            total = [t + weight * v for t, v in zip(total, vals)]
        return total


def eft_parts(engine, method) -> tuple[list, list]:
    """(guide LMs, betas) of EFT's next-token mix for ``method`` (empty for other methods)."""
    if getattr(method, "name", None) != "eft":
        return [], []
    return [*engine.tuned, engine.untuned], list(engine.eft_betas(method))


def terms_for(engine, method) -> Optional[list]:
    """The guide terms the tilt adds for ``method``: the engine's guides for BoN/CBS, none otherwise."""
    return list(engine.guides) if getattr(method, "name", None) in ("bon", "cbs") else []
