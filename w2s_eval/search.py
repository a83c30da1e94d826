"""Chunk-level beam search (CBS), the algorithm of weak-to-strong search (arXiv 2405.19262).

Symbols as in the paper: W beams, K successors per beam, chunk length L.

    round 1: for each prompt x, sample W*K continuations of L tokens from the strong policy
    score:   r(x, y) for every candidate y (the guide: e.g. log p_tuned(y|x) - log p_untuned(y|x))
    keep:    the top W candidates of each prompt (finished beams compete as they are)
    round t: extend each unfinished kept beam by K continuations of L tokens; score; keep top W
    stop:    when every kept beam of every prompt has finished (EOS, stop string, max tokens)

Best-of-N is CBS(W=1, K=N, L=inf) and base sampling is CBS(W=1, K=1, L=inf), run by
this same function. The policy (strong model engine) and the scorer (guide) come in
as arguments; nothing here loads models or reads files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from .config import SamplingConfig, SearchConfig
from .flops import Cost, add_costs, costs_to_dict, total_flops
from .guide import score_with_costs
from .policy import Continuation, Policy, prompt_seed

__all__ = ["Beam", "SearchResult", "chunk_beam_search", "response_ids"]


@dataclass
class Beam:
    """A response and its guide score (None when no scoring was needed).

    token_ids: the strong model's generated tokens of ``text`` (no EOS); where a stop string cut the text,
    the shortest prefix of the generated tokens whose text covers ``text`` (a token that straddles the cut
    is kept); empty when the policy has no tokenizer to check this with (a served strong model that returns
    no token ids gives its text re-encoded). ``eos``: the response ended on an end-of-sequence token (EOS,
    or a served model's stop token), not on a stop string.
    ``n_tokens`` counts every generated token (stop-string ones included, EOS not).
    """

    text: str
    score: Optional[float]
    ended: bool
    n_tokens: int
    done: bool = True
    token_ids: list[int] = field(default_factory=list, repr=False)
    eos: bool = False


@dataclass
class SearchResult:
    """Per prompt: the best response, the W final beams (best first), compute counters."""

    prompt: str
    text: str
    score: Optional[float]
    beams: list[Beam]
    stats: dict = field(default_factory=dict)


def chunk_beam_search(
    prompts: Sequence[str],
    policy: Policy,
    scorer: Optional[Callable],
    cfg: SearchConfig,
    sampling: SamplingConfig,
    seeds: Optional[Sequence[int]] = None,
    guide_prompts: Optional[Sequence[str]] = None,
) -> list[SearchResult]:
    """Run CBS(W, K, L) for a batch of prompts; returns one SearchResult per prompt.

    prompts: B strings; policy: the strong engine; scorer: ``(prompts, responses, finished)
    -> scores [N]`` (may be None when W*K == 1); seeds: one per prompt (default: derived
    from ``sampling.seed`` and the prompt text, so batching does not change results);
    guide_prompts: what the scorer sees as each prompt (default: the prompts themselves).
    """
    if cfg.needs_scorer and scorer is None:
        raise ValueError(f"W*K={cfg.samples_per_prompt} candidates need a scorer (a guide); pass one, or use w=k=1")
    prompts = list(prompts)
    if not prompts:
        return []
    seen = list(guide_prompts) if guide_prompts is not None else prompts
    if len(seen) != len(prompts):
        raise ValueError(f"got {len(seen)} guide_prompts for {len(prompts)} prompts; pass one per prompt")
    t0 = time.perf_counter()
    B, W, K = len(prompts), cfg.w, cfg.k
    seeds = list(seeds) if seeds is not None else [prompt_seed(sampling.seed, p) for p in prompts]
    getattr(scorer, "reset", lambda: None)()  # a guide's rows of earlier calls: this search's cost is its own
    session = policy.start(prompts, sampling, seeds)

    kept: list[list[Beam]] = [[] for _ in range(B)]  # the W beams of each prompt, best first
    guide_tokens, rounds, samples = [0] * B, [0] * B, [0] * B
    guide_costs: list[dict[str, Cost]] = [{} for _ in range(B)]
    parents, k = list(range(B)), W * K  # round 1: W*K continuations of each prompt
    while parents:
        children: list[Continuation] = session.extend(parents, k, cfg.l)
        scores, tokens, costs = _score(scorer if cfg.needs_scorer else None, seen, children)  # r(x, y) per candidate
        for c, t, cost in zip(children, tokens, costs):
            samples[c.prompt_index] += 1
            guide_tokens[c.prompt_index] += t
            add_costs(guide_costs[c.prompt_index], cost)
        for b in {c.prompt_index for c in children}:
            rounds[b] += 1
        kept, parents = _keep_top_w(kept, children, scores, W)
        k = K

    counts = {"guide_tokens": guide_tokens, "rounds": rounds, "samples": samples, "costs": guide_costs}
    decode = _decoder(policy)
    kept = [[_final(beam, decode) for beam in beams] for beams in kept]
    return _results(prompts, kept, session, counts, seeds, time.perf_counter() - t0, _session_costs(session, policy))


def _decoder(policy) -> Optional[Callable[[list[int]], str]]:
    """The policy's decoding of response tokens as its sessions decode them (None without a tokenizer)."""
    tok = getattr(getattr(policy, "lm", None), "tokenizer", None) or getattr(policy, "tokenizer", None)
    return None if tok is None else (lambda ids: tok.decode(ids, skip_special_tokens=True))


def response_ids(ids: Sequence[int], text: str, decode: Callable[[list[int]], str]) -> list[int]:
    """The shortest prefix of the generated tokens ``ids`` whose decoded text starts with ``text`` (all of
    them when ``text`` is their whole text; fewer where a stop string cut it)."""
    ids = list(ids)
    k = len(ids)
    while k > 0 and decode(ids[: k - 1]).startswith(text):
        k -= 1
    return ids[:k]


def _final(beam: Beam, decode: Optional[Callable[[list[int]], str]]) -> Beam:
    """A kept beam with its token ids cut as its text (see :class:`Beam`)."""
    if decode is None:
        return replace(beam, token_ids=[], eos=False)
    whole = decode(beam.token_ids) == beam.text
    ids = list(beam.token_ids) if whole else response_ids(beam.token_ids, beam.text, decode)
    return replace(beam, token_ids=ids, eos=beam.ended and whole)


def _score(scorer: Optional[Callable], seen: list[str], children: list[Continuation]) -> tuple[list, list[int], list]:
    """The guide's score r(x, y) of every candidate [N], the guide tokens each cost [N] and their
    {model: Cost} [N] (None, 0 and {} when no scorer is needed)."""
    if scorer is None:
        return [None] * len(children), [0] * len(children), [{}] * len(children)
    return score_with_costs(
        scorer, [seen[c.prompt_index] for c in children], [c.text for c in children], [c.ended for c in children]
    )


def _session_costs(session, policy) -> list[dict[str, Cost]]:
    """The session's {model: Cost} per prompt; a session that reports none: its strong tokens, FLOPs unknown."""
    costs = getattr(session, "costs", None)
    if costs is not None:
        return costs
    name = getattr(policy, "name", None) or "strong"
    return [{name: Cost(forward_tokens=n, forward_flops=None)} for n in session.strong_tokens]


def _keep_top_w(
    kept: list[list[Beam]], children: list[Continuation], scores: list, W: int
) -> tuple[list[list[Beam]], list[int]]:
    """Keep the top W of each prompt among its new candidates and its finished beams (finished beams
    compete as they are). Returns the new kept beams [B][<=W] and the rows of ``children`` to extend
    next round (the kept candidates that have not finished)."""
    kept = list(kept)
    touched = sorted({c.prompt_index for c in children})
    pools: dict[int, list[tuple[Beam, Optional[int]]]] = {b: [(x, None) for x in kept[b] if x.done] for b in touched}
    for row, (c, s) in enumerate(zip(children, scores)):
        pools[c.prompt_index].append((Beam(c.text, s, c.ended, c.n_tokens, c.done, c.token_ids), row))
    parents = []
    for b in touched:
        ranked = sorted(pools[b], key=lambda item: -item[0].score if item[0].score is not None else 0.0)
        kept[b] = [beam for beam, _ in ranked[:W]]
        parents.extend(row for beam, row in ranked[:W] if row is not None and not beam.done)
    return kept, parents


def _results(
    prompts: list[str],
    kept: list[list[Beam]],
    session,
    counts: dict[str, list],
    seeds: list[int],
    wall: float,
    session_costs: list[dict[str, Cost]],
) -> list[SearchResult]:
    """One SearchResult per prompt: the best kept beam, all kept beams, and the compute counters (``compute``:
    {model: Cost as a dict} of every model that ran, :mod:`w2s_eval.flops`; ``flops``: their total)."""
    extra = session.guide_tokens  # tokens the session's own guides read (EFT)
    results = []
    for b, prompt in enumerate(prompts):
        best = kept[b][0]
        costs = add_costs(add_costs({}, session_costs[b]), counts["costs"][b])
        stats = {
            "strong_tokens": session.strong_tokens[b],
            "guide_tokens": counts["guide_tokens"][b] + extra[b],
            "rounds": counts["rounds"][b],
            "samples": counts["samples"][b],
            "compute": costs_to_dict(costs),
            "flops": total_flops(costs.values()),
            "wall_time_s": wall,
            "batch_size": len(prompts),
            "seed": seeds[b],
        }
        results.append(SearchResult(prompt, best.text, best.score, kept[b], stats))
    return results
