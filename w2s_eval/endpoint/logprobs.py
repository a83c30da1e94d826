"""Log-likelihoods of continuations from an OpenAI-compatible server (prompt logprobs).

One request per (context, continuation): ``prompt = context + continuation``,
``echo: true, max_tokens: 0, logprobs: 1, temperature: 0``. The server returns, per
prompt token, its text offset, its log-probability given the tokens before it (the
first entry is None) and the top-1 alternative. The continuation's tokens are those
that reach past the end of the context (a token that straddles the boundary counts
for the continuation); entries whose ``text_offset`` lies past the text (a stop/EOS
token some servers append) are dropped. ``is_greedy``: every continuation token is
the most likely one.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from tqdm.auto import tqdm

from .client import EndpointError

logger = logging.getLogger(__name__)

__all__ = ["endpoint_loglikelihoods", "continuation_logprob"]


def continuation_logprob(choice: dict, context: str, full: str) -> tuple[float, bool]:
    """(sum of log-probabilities, is_greedy) of ``full[len(context):]`` from one echoed choice."""
    lp = choice.get("logprobs") or {}
    tokens, logprobs = lp.get("tokens"), lp.get("token_logprobs")
    offsets, tops = lp.get("text_offset"), lp.get("top_logprobs")
    if not tokens or logprobs is None or offsets is None:
        raise EndpointError(
            "the endpoint returned no prompt logprobs: the server must support "
            "`echo: true` with `logprobs` on /v1/completions (vLLM does)"
        )
    echoed = choice.get("text")
    if echoed is not None and echoed != full:
        logger.debug(
            "echoed prompt differs from the text sent (%r vs %r); offsets follow the echo", echoed[:60], full[:60]
        )
    end = len(echoed) if echoed is not None else len(full)
    entries = [i for i, o in enumerate(offsets) if o < end]  # drop stop/EOS entries past the text
    cut = len(context)
    total, greedy = 0.0, True
    for pos, i in enumerate(entries):
        nxt = offsets[entries[pos + 1]] if pos + 1 < len(entries) else end
        if offsets[i] < cut and nxt <= cut:
            continue  # a context token (one that straddles the boundary counts for the continuation)
        value = logprobs[i]
        if value is None:
            raise ValueError(
                "the first token of the text is in the continuation, and the first token has no "
                "log-probability; give a non-empty context (lm-eval passes the EOS text then)"
            )
        total += float(value)
        top = (tops[i] if tops else None) or {}
        if top and float(value) < max(float(v) for v in top.values()) - 1e-6:
            greedy = False
    return total, greedy


def endpoint_loglikelihoods(
    policy, contexts: Sequence[str], continuations: Sequence[str], progress: bool = False
) -> list[tuple[float, bool]]:
    """``(log p(continuation | context), is_greedy)`` per pair, from an :class:`EndpointPolicy`.

    Requests run concurrently (bounded by the policy's ``max_concurrency``) with its retries.
    An empty continuation scores (0.0, True) without a request.
    """
    if len(contexts) != len(continuations):
        raise ValueError(
            f"got {len(contexts)} contexts for {len(continuations)} continuations; pass one of each per pair"
        )
    out: list[Optional[tuple[float, bool]]] = [None] * len(contexts)
    todo = [i for i, c in enumerate(continuations) if c]
    for i, c in enumerate(continuations):
        if not c:
            out[i] = (0.0, True)
    model = policy.model
    bodies = [
        {
            "model": model,
            "prompt": contexts[i] + continuations[i],
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
        }
        for i in todo
    ]
    bar = tqdm(total=len(bodies), desc="loglikelihood", disable=not progress)
    try:
        responses = policy.client.complete_many(bodies, progress=bar)
    finally:
        bar.close()
    for i, resp in zip(todo, responses):
        choices = resp.get("choices") or []
        if not choices:
            raise EndpointError(
                f"strong-model endpoint {policy.base_url} returned no choices for a loglikelihood request"
            )
        out[i] = continuation_logprob(choices[0], contexts[i], contexts[i] + continuations[i])
    return out  # type: ignore[return-value]
