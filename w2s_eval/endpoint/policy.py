"""The strong model behind an OpenAI-compatible completions server, as a search Policy.

Per round, every kept beam is one request ``n=K, max_tokens=L`` (None: the rest of
``max_new_tokens``) with the sampling settings; all beams of all prompts are in
flight at once (bounded), so the server batches them, and its prefix cache makes
re-sending a beam's prefix cheap. BoN(N) is one request with ``n=N``, base one with ``n=1``.

What a beam re-sends: with ``exact_tokens`` ("auto", the default) the policy asks for
``return_token_ids`` (vLLM); when the server returns the prompt's and the choices'
token ids, later rounds send ``prompt`` = those ids (prompt + response so far), so a
chunked search extends exactly the tokens that were sampled, as the local engine
does. Otherwise (other servers, or ``exact_tokens=False``) the prompt text + the
response text so far is sent and the server re-tokenizes it; a chunk boundary inside
a word may then tokenize differently from how it was sampled.

Mapping of a choice: ``finish_reason`` "stop" (EOS or a stop string) -> ended;
"length" -> not ended; done when ended or the response has ``max_new_tokens``
tokens. A stop string that spans two chunks is found on the joined text, as the
local engine does. Fewer choices than ``n`` is an :class:`EndpointError`.

Per-request seeds derive from the prompt's seed, the round and the parent's place
among that prompt's beams, so a run is reproducible wherever the server honours
``seed`` (vLLM does), and independent of batching and of request order.

Token counts (per prompt, :attr:`EndpointSession.token_counts`): ``prompt`` = prompt
tokens the server was sent (each round re-sends prefixes; a prefix cache makes most
of them cheap), ``completion`` = tokens it generated (stop/EOS tokens included), and
``cached`` = prompt tokens the server reports as served from its prefix cache (vLLM
with ``--enable-prompt-tokens-details``; else 0). ``strong_tokens`` = prompt + completion,
the server's usage as it bills it. Response lengths (``n_tokens``) come from the
returned token ids, else from ``tokenizer`` when given, else from the choices'
logprob entries.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..checks import check_positive_int
from ..config import SamplingConfig
from ..flops import Cost
from ..policy import Continuation, cut_at_stop
from .client import CompletionClient, EndpointError

logger = logging.getLogger(__name__)

__all__ = ["EndpointPolicy", "EndpointSession", "request_seed"]


def request_seed(prompt_seed: int, round_index: int, parent: int) -> int:
    """A 31-bit request seed from the prompt's seed, the round (1-based) and the parent's place."""
    digest = hashlib.sha256(f"{prompt_seed}\x00{round_index}\x00{parent}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class EndpointPolicy:
    """A strong model served by an OpenAI-compatible ``/v1/completions`` server (e.g. vLLM).

    base_url: the server's ``/v1`` URL; model: the served model name (None: the only model
    the server lists); api_key_env: the environment variable that holds the API key (a
    missing key sends "EMPTY", which vLLM without ``--api-key`` accepts); timeout: seconds
    per request; max_concurrency: requests in flight; max_retries: retries of 429/5xx/timeouts;
    tokenizer: optional local tokenizer of the served model (decodes returned token ids as the
    local engine does, or counts response tokens); extra_body: more request fields (e.g.
    ``{"repetition_penalty": 1.1}``); exact_tokens: "auto" / True / False (module docstring;
    True raises when the server returns no token ids).
    """

    def __init__(
        self,
        base_url: str,
        model: Optional[str] = None,
        api_key_env: Optional[str] = "OPENAI_API_KEY",
        timeout: float = 300.0,
        max_concurrency: int = 64,
        max_retries: int = 4,
        tokenizer=None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        extra_body: Optional[dict] = None,
        exact_tokens="auto",
    ):
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"strong_model must be the served model's name, got {model!r}")
        self.client = CompletionClient(
            base_url, api_key_env, timeout, max_concurrency, max_retries, backoff, max_backoff
        )
        self.base_url = self.client.base_url
        self._model = model
        self.tokenizer = tokenizer
        self.extra_body = dict(extra_body or {})
        if exact_tokens not in ("auto", True, False):
            raise ValueError(f"exact_tokens must be 'auto', True or False, got {exact_tokens!r}")
        self.exact_tokens = exact_tokens
        self.server_ids: Optional[bool] = None  # whether the server returned token ids (None: not seen yet)
        self.add_special_tokens = None  # the server tokenizes as its model's tokenizer does

    @property
    def model(self) -> str:
        """The served model name; asks the server when none was given."""
        if self._model is None:
            ids = [m.get("id") for m in self.client.list_models()]
            if len(ids) != 1:
                raise ValueError(
                    f"strong-model endpoint {self.base_url} serves {len(ids)} models ({', '.join(map(str, ids))}); "
                    "name one with strong_model=NAME"
                )
            self._model = ids[0]
        return self._model

    @property
    def name(self) -> str:
        return f"{self._model or 'the served model'} at {self.base_url}"

    def describe(self) -> dict:
        """What a record needs to say which strong model ran (no API key)."""
        c = self.client
        return {
            "engine": "openai-completions",
            "base_url": self.base_url,
            "model": self.model,
            "timeout": c.timeout,
            "max_concurrency": c.max_concurrency,
            "max_retries": c.max_retries,
            "extra_body": dict(self.extra_body),
            "exact_tokens": self.exact_tokens,
            "server_token_ids": self.server_ids,
        }

    def close(self) -> None:
        self.client.close()

    def start(self, prompts: Sequence[str], cfg: SamplingConfig, seeds: Sequence[int]) -> "EndpointSession":
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one seed per prompt")
        for p in prompts:
            if not isinstance(p, str) or not p:
                raise ValueError(f"empty prompt given to {self.name!r}: every prompt needs at least one character")
        return EndpointSession(self, list(prompts), cfg, [int(s) for s in seeds])

    def body(self, prompt, n: int, max_tokens: int, cfg: SamplingConfig, seed: int) -> dict:
        """The ``/v1/completions`` request body of one beam (``prompt``: text or token ids)."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "n": n,
            "max_tokens": max_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": seed,
        }
        if cfg.stop:
            body["stop"] = list(cfg.stop)
        if self.tokenizer is None and not self.server_ids:
            body["logprobs"] = 0  # only the sampled tokens: they give each choice's length
        extra = dict(self.extra_body)
        if self.exact_tokens and self.server_ids is not False:
            extra["return_token_ids"] = True  # vLLM: the prompt's and each choice's token ids
        if cfg.top_k > 0:
            extra["top_k"] = cfg.top_k  # not in the OpenAI schema; vLLM and most servers accept it
        if extra:
            body["extra_body"] = extra
        return body


@dataclass
class _Row:
    prompt_index: int
    text: str = ""
    n_tokens: int = 0
    ended: bool = False
    done: bool = False
    ids: Optional[list] = field(default_factory=list)  # response token ids; None: not known


class EndpointSession:
    """Rows (beams) of a batch of prompts on an endpoint; same contract as ``LocalSession``."""

    def __init__(self, policy: EndpointPolicy, prompts: list[str], cfg: SamplingConfig, seeds: list[int]):
        self.policy, self.prompts, self.cfg, self.seeds = policy, prompts, cfg, seeds
        b = len(prompts)
        self.rows = [_Row(i) for i in range(b)]
        self.prompt_ids: list[Optional[list[int]]] = [None] * b  # the server's tokens of each prompt
        self.rounds = [0] * b
        self.token_counts = [{"prompt": 0, "completion": 0, "cached": 0} for _ in range(b)]
        self.requests = [0] * b

    @property
    def strong_tokens(self) -> list[int]:
        """Per prompt: prompt tokens sent + completion tokens generated (see the module docstring)."""
        return [c["prompt"] + c["completion"] for c in self.token_counts]

    @property
    def guide_tokens(self) -> list[int]:
        """No guide runs inside an endpoint session (the guides score in the search)."""
        return [0] * len(self.token_counts)

    @property
    def costs(self) -> list[dict[str, Cost]]:
        """Per prompt: the prompt tokens sent as prefill, the completion tokens as forward; FLOPs unknown (the
        served model's shape is not known here)."""
        return [{self.policy.name: Cost(c["prompt"], None, c["completion"], None)} for c in self.token_counts]

    def _check_parents(self, parents: Sequence[int], k: int) -> None:
        check_positive_int("k", k)
        for p in parents:
            if not 0 <= p < len(self.rows):
                raise ValueError(f"parent row {p} does not exist (the session has {len(self.rows)} rows)")
            if self.rows[p].done:
                raise ValueError("extend() was asked to extend a finished row")
        order = [self.rows[p].prompt_index for p in parents]
        if any(a > b for a, b in zip(order, order[1:])):
            raise ValueError("parents must be grouped by prompt, in prompt order")

    def _prompt(self, row: _Row):
        """What a beam sends: token ids when known, else prompt text + response text."""
        head = self.prompt_ids[row.prompt_index]
        if head is not None and row.ids is not None:
            return head + row.ids
        return self.prompts[row.prompt_index] + row.text

    def extend(self, parents: Sequence[int], k: int, max_tokens: Optional[int]) -> list[Continuation]:
        """Extend each parent row by ``k`` continuations of at most ``max_tokens`` tokens."""
        parents = list(parents)
        self._check_parents(parents, k)
        cfg, bodies, place = self.cfg, [], {}
        for p in parents:
            row = self.rows[p]
            b = row.prompt_index
            j = place.get(b, 0)
            place[b] = j + 1
            if j == 0:
                self.rounds[b] += 1
            room = cfg.max_new_tokens - row.n_tokens
            n_max = room if max_tokens is None else min(max_tokens, room)
            seed = request_seed(self.seeds[b], self.rounds[b], j)
            # greedy children are all the same: one choice, copied (vLLM refuses n > 1 when greedy)
            bodies.append(self.policy.body(self._prompt(row), 1 if cfg.greedy else k, n_max, cfg, seed))
        responses = self.policy.client.complete_many(bodies)
        children: list[_Row] = []
        for p, body, resp in zip(parents, bodies, responses):
            children.extend(self._children(self.rows[p], body, resp, k))
        self.rows = children
        return [Continuation(r.prompt_index, r.text, r.ended, r.done, r.n_tokens, list(r.ids or [])) for r in children]

    def _note_token_ids(self, choices: list[dict], b: int) -> bool:
        """Whether these choices carry token ids; remember the prompt's ids and the server's habit."""
        policy = self.policy
        has = all(isinstance(c.get("token_ids"), list) for c in choices)
        if has and self.prompt_ids[b] is None and isinstance(choices[0].get("prompt_token_ids"), list):
            self.prompt_ids[b] = list(choices[0]["prompt_token_ids"])
        if policy.exact_tokens and policy.server_ids is None:
            policy.server_ids = has
            if not has:
                if policy.exact_tokens is True:
                    raise EndpointError(
                        f"strong-model endpoint {policy.base_url} returns no token ids "
                        "(return_token_ids); use exact_tokens='auto' or False with this server"
                    )
                logger.info("endpoint %s returns no token ids: beams are re-sent as text", policy.base_url)
        return has

    def _children(self, parent: _Row, body: dict, resp: dict, k: int) -> list[_Row]:
        url = self.policy.base_url
        choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
        n = body["n"]
        if len(choices) != n or [c.get("index", i) for i, c in enumerate(choices)] != list(range(n)):
            raise EndpointError(
                f"strong-model endpoint {url} returned {len(choices)} choices for n={n}; "
                "a short beam would bias the search (is n capped on the server?)"
            )
        choices = choices * (k // n)
        b = parent.prompt_index
        self.requests[b] += 1
        with_ids = self._note_token_ids(choices, b) and parent.ids is not None
        lengths = [self._length(c, body["max_tokens"]) for c in choices]
        usage = resp.get("usage") or {}
        counts = self.token_counts[b]
        counts["prompt"] += int(usage.get("prompt_tokens") or self._count_prompt(body["prompt"]))
        generated = usage.get("completion_tokens")
        counts["completion"] += int(generated if generated is not None else sum(n for n, _ in lengths))
        details = usage.get("prompt_tokens_details") or {}
        counts["cached"] += int(details.get("cached_tokens") or 0)
        unknown = [i for i, (n, exact) in enumerate(lengths) if not exact]
        if unknown and generated is not None:  # share the rest of the usage among choices of unknown length
            rest = max(0, int(generated) - sum(n for n, exact in lengths if exact))
            for i in unknown:
                lengths[i] = (rest // len(unknown), False)
        tok = self.policy.tokenizer
        out = []
        for c, (n_new, _) in zip(choices, lengths):
            reason = c.get("finish_reason")
            if reason not in ("stop", "length"):
                raise EndpointError(
                    f"strong-model endpoint {url} finished a choice with finish_reason={reason!r}; "
                    "expected 'stop' or 'length' (see the server log)"
                )
            ids = parent.ids + _response_ids(c) if with_ids else None
            if ids is not None and tok is not None:
                text = tok.decode(ids, skip_special_tokens=True)  # as the local engine decodes
            else:
                text = parent.text + (c.get("text") or "")
            text, stopped = cut_at_stop(text, self.cfg.stop)
            n_tokens = min(len(ids) if ids is not None else parent.n_tokens + n_new, self.cfg.max_new_tokens)
            ended = reason == "stop" or stopped
            if ids is None and tok is not None:
                ids = tok.encode(text, add_special_tokens=False)
            out.append(_Row(b, text, n_tokens, ended, ended or n_tokens >= self.cfg.max_new_tokens, ids))
        return out

    def _length(self, choice: dict, max_tokens: int) -> tuple[int, bool]:
        """Response tokens this choice added, and whether the count is exact."""
        if isinstance(choice.get("token_ids"), list):
            return len(_response_ids(choice)), True
        reason = choice.get("finish_reason")
        text = choice.get("text") or ""
        tok = self.policy.tokenizer
        if tok is not None:
            return len(tok.encode(text, add_special_tokens=False)), True
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens")
        if tokens is None:
            return (max_tokens, True) if reason == "length" else (0, False)
        if reason == "length":
            return len(tokens), True
        if _ended_by_token(choice):  # EOS or a stop token id: the last entry
            return max(0, len(tokens) - 1), True
        offsets = lp.get("text_offset") or []
        if len(offsets) != len(tokens) or not offsets:
            return len(tokens), True
        base = offsets[0]  # offsets may count from the prompt's start; the first token starts the choice
        return sum(1 for o in offsets if o - base < len(text)), True  # drop the stop/EOS entries past the text

    def _count_prompt(self, prompt) -> int:
        if isinstance(prompt, list):
            return len(prompt)
        tok = self.policy.tokenizer
        return len(tok.encode(prompt)) if tok is not None else 0


def _ended_by_token(choice: dict) -> bool:
    """finish_reason "stop" by EOS (vLLM: stop_reason None) or a stop token id (an int)."""
    if choice.get("finish_reason") != "stop" or "stop_reason" not in choice:
        return False
    reason = choice["stop_reason"]
    return reason is None or (isinstance(reason, int) and not isinstance(reason, bool))


def _response_ids(choice: dict) -> list[int]:
    """A choice's generated token ids without the EOS / stop token that ended it (the local engine keeps
    the tokens of a stop string, but not EOS)."""
    ids = list(choice["token_ids"])
    if ids and _ended_by_token(choice):
        ids = ids[:-1]
    return ids
