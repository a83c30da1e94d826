"""A guide language model that scores log p(y|x) of response text, incrementally.

A guide reads the decoded *text* of prompt and response with its own tokenizer and prompt template, so it need not
share the strong model's vocabulary. The prompt part (template applied) and the response are tokenized separately
and concatenated, as TRL's DPOTrainer does when it trains the tuned guide:

    ids = tok(template(x)) + tok(y) [+ EOS if y is finished]
    log p(y|x) = sum_{i >= len(tok(template(x)))} log p(ids[i] | ids[:i])

Incremental scoring: the guide remembers the rows of its last call (their KV cache and per-token log-probs). A new
response reuses the cached row that shares the longest token prefix with it and feeds only the tokens past that
prefix; where re-tokenization changed earlier tokens, those positions become holes in the attention mask and are fed
again. Results equal a full re-score (``incremental=False``). What is remembered is a cache of pure computations: it
never changes a result; a search empties it first (``reset``), so what each search costs (its FLOPs) is its own.

The guide contract: a guide is a stateless callable ``scorer(prompts, responses, finished) -> scores [N]``; every
call gets the prompts, nothing is set beforehand, and ``.score(...)`` returns the same values plus the guide token
forwards each response cost (:class:`Scorer`, :class:`Scores`). :func:`score_candidates` calls any scorer and checks
what it returns.

- :class:`ImplicitValueScorer`: beta * (log p_tuned(y|x) - log p_untuned(y|x)), the paper's implicit value, on
  decoded text with each guide's own tokenizer (two :class:`GuideLM`);
- :class:`WeightedSum`: sum_i w_i * scorer_i; the reward-model and classifier scorers are in
  :mod:`w2s_eval.scorers`.

An engine's guide is data: a tuple of :class:`GuideTerm` ``(weight, kind, scorer)`` whose sum
``sum_i weight_i * scorer_i(...)`` ranks the candidates (:func:`guide_scorer`). ``kind`` says
what the scorer is, so an adapter needs no ``isinstance``: ``"implicit"`` (an
:class:`ImplicitValueScorer` with beta 1: ``.tuned`` and ``.untuned`` are :class:`GuideLM`,
its value is ``log p_tuned(y|x) - log p_untuned(y|x)`` and the weight is the spec's beta),
``"reward_model"`` (a :class:`~w2s_eval.scorers.RewardModelScorer`, weight rm_weight) or ``"custom"`` (any
callable ``scorer(prompts, responses, finished) -> [N]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from .checks import check_number
from .flops import Cost, add_costs, flops_of
from .lm import CausalLM, KVRows, right_pad, user_turn

__all__ = [
    "GuideLM",
    "Scores",
    "Scorer",
    "check_lengths",
    "ImplicitValueScorer",
    "WeightedSum",
    "score_candidates",
    "score_with_costs",
    "GuideTerm",
    "GUIDE_KINDS",
    "guide_scorer",
]

_PROBE = "Hello, world! It's 42 degrees."


@dataclass
class _Row:
    prompt: str
    response: str
    ids: list[int]  # prompt + response tokens; the cache holds ids[:-1]
    logps: list[float]  # logps[i-1] = log p(ids[i] | ids[:i])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, compared in C
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _token_logps(
    lm: CausalLM, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, block: int = 1 << 22
) -> torch.Tensor:
    """log p(targets) [R, T] from logits [R, T, V] (NaN/inf checked where ``mask`` [R, T] is 1), computed over
    blocks of about ``block`` logits: per position, so the values are those of one pass, while the
    vocabulary-wide temporaries stay small (one pass over a BoN-sized [R, T, V] ran 2x slower on CPU)."""
    vocab = logits.shape[-1]
    flat, tgt, real = logits.reshape(-1, vocab), targets.reshape(-1, 1), mask.reshape(-1).bool()
    lm.check_finite(flat, real)  # once: one host sync per call, not one per block
    step = max(1, block // vocab)
    parts = []
    for lo in range(0, flat.shape[0], step):
        parts.append(torch.log_softmax(flat[lo : lo + step], dim=-1).gather(-1, tgt[lo : lo + step]).squeeze(-1))
    return torch.cat(parts).reshape(targets.shape)


class GuideLM:
    """Scores sum log p(response | prompt) under one causal LM.

    template: a format string with ``{prompt}`` (default ``"{prompt}"``), or ``"chat"``
    for the tokenizer's chat template (user turn + generation prompt).
    """

    def __init__(self, lm: CausalLM, template: str = "{prompt}", incremental: bool = True):
        if template != "chat" and "{prompt}" not in template:
            raise ValueError(f"guide template for {lm.name!r} must contain '{{prompt}}' or be 'chat', got {template!r}")
        if template == "chat" and not getattr(lm.tokenizer, "chat_template", None):
            raise ValueError(f"template='chat' but {lm.name!r}'s tokenizer has no chat template; pass a format string")
        self.lm, self.template, self.incremental = lm, template, incremental
        self._check_tokenizer()
        if incremental:
            lm.check_rewindable()
        self._kv: Optional[KVRows] = None
        self._rows: list[_Row] = []
        self._prefix_memo: dict[str, list[int]] = {}  # prompt -> prefix ids (a pure function's values)

    def _check_tokenizer(self) -> None:
        tok = self.lm.tokenizer
        back = tok.decode(tok.encode(_PROBE, add_special_tokens=False), skip_special_tokens=True)
        if back.strip() != _PROBE:
            raise ValueError(
                f"the tokenizer of guide {self.lm.name!r} cannot decode text it encodes ({_PROBE!r} -> {back!r}); "
                "use a guide whose tokenizer round-trips text (a byte-level BPE such as the strong model's)"
            )

    def prefix_ids(self, prompt: str) -> list[int]:
        """Token ids of the templated prompt (what the response is conditioned on)."""
        ids = self._prefix_memo.get(prompt)
        if ids is None:
            if len(self._prefix_memo) > 4096:
                self._prefix_memo.clear()
            ids = self._prefix_memo[prompt] = self._encode_prefix(prompt)
        return ids

    def _encode_prefix(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"empty prompt given to guide {self.lm.name!r}: every prompt needs text")
        tok = self.lm.tokenizer
        if self.template == "chat":
            ids = tok.encode(user_turn(tok, prompt), add_special_tokens=False)
        else:
            ids = tok.encode(self.template.format(prompt=prompt))
        if not ids:
            raise ValueError(f"prompt {prompt[:40]!r} encodes to no tokens with guide {self.lm.name!r}")
        return ids

    def reset(self) -> None:
        """Forget the remembered rows (frees their KV cache)."""
        self._kv, self._rows = None, []

    def encode_responses(self, responses: Sequence[str]) -> list[list[int]]:
        """Token ids of response texts (no special tokens)."""
        return self.lm.tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []

    def reads_like(self, other: "GuideLM") -> bool:
        """True when ``other`` tokenizes prompts and responses exactly as this guide does."""
        a, b = self.lm.tokenizer, other.lm.tokenizer
        return self.template == other.template and (
            a is b or (type(a) is type(b) and a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id)
        )

    def logprob_sums(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        finished: Sequence[bool],
        resp_ids: Optional[list[list[int]]] = None,
    ) -> tuple[torch.Tensor, list[int]]:
        """Return (sum log p(y|x) [N] float64, token forwards per item [N]).

        ``resp_ids``: the responses already tokenized by :meth:`encode_responses` of a guide
        that :meth:`reads_like` this one (saves tokenizing twice).
        """
        return self.logprob_sums_costed(prompts, responses, finished, resp_ids)[:2]

    def logprob_sums_costed(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        finished: Sequence[bool],
        resp_ids: Optional[list[list[int]]] = None,
    ) -> tuple[torch.Tensor, list[int], list[Cost]]:
        """:meth:`logprob_sums` and each item's :class:`~w2s_eval.flops.Cost`: the response positions it feeds, and on
        the first item of a prompt this guide had no row for, the templated prompt fed once (prefill)."""
        eos = self.lm.eos_ids[0] if self.lm.eos_ids else None
        prefixes = {p: self.prefix_ids(p) for p in dict.fromkeys(prompts)}
        if resp_ids is None:
            resp_ids = self.encode_responses(responses)
        fulls = []
        for p, r, f in zip(prompts, resp_ids, finished):
            fulls.append(prefixes[p] + list(r) + ([eos] if f and eos is not None else []))
        starts = [len(prefixes[p]) for p in prompts]
        if not self.incremental:
            return self._full(fulls, starts)
        parents = self._match_parents(prompts, responses, fulls)
        costs = self._add_prompt_rows(prompts, prefixes, parents)
        return self._extend(prompts, responses, fulls, starts, parents, costs)

    def _full(self, fulls: list[list[int]], starts: list[int]) -> tuple[torch.Tensor, list[int], list[Cost]]:
        """Reference path: score every sequence from scratch, no cache, nothing shared."""
        feeds = [f[:-1] for f in fulls]
        ids, mask = right_pad(feeds, self.lm.pad_id, self.lm.device)
        logits = self.lm.forward(ids, mask, None)
        self.lm.check_finite(logits.reshape(-1, logits.shape[-1]), mask.reshape(-1).bool())
        targets, _ = right_pad([f[1:] for f in fulls], 0, self.lm.device)
        lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).double().cpu()
        sums = [float(lp[i, s - 1 : len(f) - 1].sum()) for i, (f, s) in enumerate(zip(fulls, starts))]
        costs = [Cost(forward_tokens=len(f), forward_flops=flops_of(self.lm.shape, len(f))) for f in feeds]
        return torch.tensor(sums, dtype=torch.float64), [len(f) for f in feeds], costs

    def _match_parents(self, prompts, responses, fulls) -> list[Optional[int]]:
        """For each item, the remembered row of its prompt whose response text it extends
        (longest first; a trailing U+FFFD, a partial UTF-8 character, may have changed), else
        the row sharing the most tokens with it (None: no row for its prompt yet)."""
        by_prompt: dict[str, list[tuple[int, str]]] = {}  # prompt -> (row, its response less a trailing U+FFFD)
        for i, row in enumerate(self._rows):
            by_prompt.setdefault(row.prompt, []).append((i, row.response.rstrip("\ufffd")))
        out = []
        for p, r, full in zip(prompts, responses, fulls):
            cands = by_prompt.get(p, [])
            best, best_len = None, -1  # best_len: the length of the best row's whole response
            for i, rr in cands:
                if len(rr) > best_len and r.startswith(rr):
                    best, best_len = i, len(self._rows[i].response)
            if best is None and cands:
                best = max((i for i, _ in cands), key=lambda i: _common_prefix(self._rows[i].ids, full))
            out.append(best)
        return out

    def _add_prompt_rows(self, prompts, prefixes, parents) -> list[Cost]:
        """Encode each prompt that has no remembered row once, as a row of its own; each item's Cost of that."""
        costs = [Cost() for _ in prompts]
        fresh = list(dict.fromkeys(p for p, par in zip(prompts, parents) if par is None))
        if not fresh:
            return costs
        first_item = {p: i for i, (p, par) in reversed(list(enumerate(zip(prompts, parents)))) if par is None}
        used = sorted({par for par in parents if par is not None})
        n_old = len(used)
        if self._kv is None or not used:
            self._kv, self._rows = KVRows(self.lm, len(fresh), rewindable=True), []
            keep_old = []
        else:
            keep_old = used + [used[0]] * len(fresh)  # fresh rows start as copies, then are wiped
            self._kv.select(torch.tensor(keep_old, dtype=torch.long))
            wipe = torch.tensor([10**9] * n_old + [0] * len(fresh))
            self._kv.forget_after(wipe)
        remap = {old: new for new, old in enumerate(used)}
        self._rows = [self._rows[i] for i in used]
        heads = [[] for _ in range(n_old)] + [prefixes[p][:-1] for p in fresh]
        if any(heads):
            ids, mask = right_pad(heads, self.lm.pad_id, self.lm.device)
            self._kv.feed(ids, mask)
        for p in fresh:
            self._rows.append(_Row(p, "", prefixes[p], [0.0] * (len(prefixes[p]) - 1)))
        first_row = {p: n_old + j for j, p in enumerate(fresh)}
        for i, (p, par) in enumerate(zip(prompts, parents)):
            parents[i] = first_row[p] if par is None else remap[par]
        for p in fresh:
            costs[first_item[p]].add_prefill(len(prefixes[p]) - 1, flops_of(self.lm.shape, len(prefixes[p]) - 1))
        return costs

    def _extend(self, prompts, responses, fulls, starts, parents, costs) -> tuple[torch.Tensor, list[int], list[Cost]]:
        """Select each item's parent row, forget what differs, feed the rest; score (adding to ``costs``)."""
        keep, feeds = [], []
        for full, par in zip(fulls, parents):
            prev = self._rows[par].ids
            j = max(min(_common_prefix(prev, full), len(prev)) - 1, 0)
            keep.append(j)
            feeds.append(full[j:-1])
        self._kv.select(torch.tensor(parents, dtype=torch.long))
        self._kv.forget_after(torch.tensor(keep))
        new_logps: list[list[float]] = [[] for _ in fulls]
        if any(feeds):
            ids, mask = right_pad(feeds, self.lm.pad_id, self.lm.device)
            logits = self._kv.feed(ids, mask)
            targets, _ = right_pad([full[j + 1 :] for full, j in zip(fulls, keep)], 0, self.lm.device)
            lp = _token_logps(self.lm, logits, targets, mask)
            rows_lp = lp.masked_fill(mask == 0, 0.0).double().cpu().tolist()
            new_logps = [row[: len(f)] for row, f in zip(rows_lp, feeds)]
        rows, sums = [], []
        for i, (full, j, par) in enumerate(zip(fulls, keep, parents)):
            logps = self._rows[par].logps[:j] + new_logps[i]
            rows.append(_Row(prompts[i], responses[i], full, logps))
            sums.append(sum(logps[starts[i] - 1 :]))
            costs[i].add_forward(len(feeds[i]), flops_of(self.lm.shape, len(feeds[i]), j))  # j positions kept
        self._rows = rows
        return torch.tensor(sums, dtype=torch.float64), [len(f) for f in feeds], costs


# ----------------------------------------------------------------------------- the guide contract

GUIDE_KINDS = ("implicit", "reward_model", "custom")


@dataclass
class Scores:
    values: torch.Tensor  # [N] float64, on CPU
    tokens: list[int]  # guide token forwards per response
    costs: Optional[list[dict[str, Cost]]] = None  # per response: {model name: Cost} (None: not reported)


class Scorer:
    """Base class: implement ``score``; calling the scorer returns the values only."""

    def score(self, prompts: Sequence[str], responses: Sequence[str], finished: Sequence[bool]) -> Scores:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], finished: Sequence[bool]) -> torch.Tensor:
        return self.score(prompts, responses, finished).values

    def reset(self) -> None:
        """Forget what earlier calls left to reuse (results unchanged; a search starts so: its cost is its own)."""


def check_lengths(prompts, responses, finished) -> None:
    """One prompt and one finished flag per response, else a ValueError."""
    if not (len(prompts) == len(responses) == len(finished)):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(responses)} responses, {len(finished)} flags; pass one each"
        )


class ImplicitValueScorer(Scorer):
    """beta * sum_t [log p_tuned(y_t | x, y_<t) - log p_untuned(y_t | x, y_<t)].

    ``tuned`` and ``untuned`` are :class:`GuideLM` objects (they may use different
    tokenizers from each other and from the strong model).
    """

    def __init__(self, tuned: GuideLM, untuned: GuideLM, beta: float = 1.0):
        check_number("beta", beta)
        self.tuned, self.untuned, self.beta = tuned, untuned, float(beta)
        self._same_reading = tuned.reads_like(untuned)

    def score(self, prompts, responses, finished) -> Scores:
        check_lengths(prompts, responses, finished)
        ids = self.tuned.encode_responses(responses)
        lt, nt, ct = self.tuned.logprob_sums_costed(prompts, responses, finished, ids)
        lu, nu, cu = self.untuned.logprob_sums_costed(prompts, responses, finished, ids if self._same_reading else None)
        costs = [add_costs({self.tuned.lm.name: a}, {self.untuned.lm.name: b}) for a, b in zip(ct, cu)]
        return Scores(self.beta * (lt - lu), [a + b for a, b in zip(nt, nu)], costs)

    def reset(self) -> None:
        self.tuned.reset()
        self.untuned.reset()

    def __repr__(self) -> str:
        return f"ImplicitValueScorer(tuned={self.tuned.lm.name!r}, untuned={self.untuned.lm.name!r}, beta={self.beta})"


class WeightedSum(Scorer):
    """sum_i weight_i * scorer_i(prompts, responses, finished)."""

    def __init__(self, terms: Sequence[tuple[float, object]]):
        if not terms:
            raise ValueError("WeightedSum needs at least one (weight, scorer) pair")
        self.terms = [(float(w), s) for w, s in terms]

    def score(self, prompts, responses, finished) -> Scores:
        total = torch.zeros(len(responses), dtype=torch.float64)
        tokens = [0] * len(responses)
        costs: list[dict[str, Cost]] = [{} for _ in responses]
        for w, s in self.terms:
            values, toks, cs = score_with_costs(s, list(prompts), list(responses), list(finished))
            total += w * torch.tensor(values, dtype=torch.float64)
            tokens = [a + b for a, b in zip(tokens, toks)]
            costs = [add_costs(mine, c) for mine, c in zip(costs, cs)]
        return Scores(total, tokens, costs)

    def reset(self) -> None:
        for _, s in self.terms:
            getattr(s, "reset", lambda: None)()


def score_candidates(
    scorer: Callable, prompts: list[str], texts: list[str], ended: list[bool]
) -> tuple[list[float], list[int]]:
    """Call a scorer; return (scores, guide token forwards per candidate).

    Scorers built on :class:`Scorer` report their token counts via ``.score``; any other
    callable ``scorer(prompts, responses, finished) -> tensor`` counts 0.
    """
    return score_with_costs(scorer, prompts, texts, ended)[:2]


def score_with_costs(
    scorer: Callable, prompts: list[str], texts: list[str], ended: list[bool]
) -> tuple[list[float], list[int], list[dict[str, Cost]]]:
    """:func:`score_candidates` and each candidate's {model name: Cost} (empty where the scorer reports none)."""
    if hasattr(scorer, "score"):
        out = scorer.score(prompts, texts, ended)
        values, tokens, costs = out.values, list(out.tokens), getattr(out, "costs", None)
    else:
        values, tokens, costs = scorer(prompts, texts, ended), [0] * len(texts), None
    values = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if values.numel() != len(texts):
        raise ValueError(f"scorer returned {values.numel()} scores for {len(texts)} responses")
    if not bool(torch.isfinite(values).all()):
        raise FloatingPointError(
            f"scorer {scorer!r} returned NaN/inf scores; check the guide models (try dtype=float32)"
        )
    return values.tolist(), tokens, list(costs) if costs is not None else [{} for _ in texts]


class GuideTerm(NamedTuple):
    """One additive term of an engine's guide: ``weight * scorer(prompts, responses, finished)``."""

    weight: float
    kind: str  # one of GUIDE_KINDS
    scorer: Callable

    def check(self) -> "GuideTerm":
        check_number("guide weight", self.weight)
        if self.kind not in GUIDE_KINDS:
            raise ValueError(f"guide kind {self.kind!r} is unknown; choose one of {', '.join(GUIDE_KINDS)}")
        if not callable(self.scorer):
            raise ValueError(f"the scorer of a {self.kind} guide term must be callable, got {self.scorer!r}")
        return self


def guide_scorer(guides: Sequence[GuideTerm]) -> Optional[Callable]:
    """The one scorer the guide terms sum to: None without terms, the scorer itself for one term of
    weight 1, else a :class:`WeightedSum`."""
    if not guides:
        return None
    if len(guides) == 1 and guides[0].weight == 1.0:
        return guides[0].scorer
    return WeightedSum([(g.weight, g.scorer) for g in guides])
