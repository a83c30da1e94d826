"""The FastAPI app: OpenAI's ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models`` and ``/health``.

Each request is validated (:mod:`.protocol`), turned into one :class:`~.batcher.Job` per
prompt and choice, and awaited; the :class:`~.batcher.Batcher` runs jobs of concurrent
requests together. Errors reach the client as OpenAI's error JSON (4xx for what the
client can fix, 500 with the error's message otherwise), never as a traceback. What one request
may cost is bounded before anything is queued (:class:`~.protocol.Limits`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import time
import uuid
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Method, SamplingConfig, context_error
from ..engine import PreparedMethod
from ..flops import add_costs, costs_from_dict, costs_to_dict, total_flops
from ..policy import choice_seed, encode_prompt
from ..tilt import Tilt, terms_for
from .batcher import Batcher, Job
from .guard import Guard
from .protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    ServeConfig,
    error_body,
    resolve_method,
)
from .scoring import score_sequences

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


class Server:
    """The state behind the routes: engine, batcher, default method, limits."""

    def __init__(self, engine, cfg: ServeConfig, default: Method):
        self.engine, self.cfg, self.default = engine, cfg, default
        self.batcher = Batcher(engine, cfg.max_batch_prompts, cfg.max_wait_ms)
        policy = engine.policy
        tok = policy.lm.tokenizer if hasattr(policy, "lm") else getattr(policy, "tokenizer", None)
        # the request handlers' own copy: a fast tokenizer is not safe to share with the model thread
        self.tokenizer = copy.deepcopy(tok)
        self.eos_id = _eos_id(policy.lm) if hasattr(policy, "lm") else None
        self._tilts: dict[str, Tilt] = {}
        self._prepared: dict[str, PreparedMethod] = {}  # each method checked and prepared once, then reused

    def method(self, req, max_new_tokens: int, prompts: int) -> Method:
        """The request's method, its cost checked (:meth:`~.protocol.Limits.check_cost`) before it is prepared."""
        method = resolve_method(req, self.cfg.served_model_name, self.default)
        self.cfg.limits.check_cost(
            method, max_new_tokens, req.n, prompts, "method" if req.method else "model", req.tokens_param
        )
        if method.spec not in self._prepared:
            try:
                self._prepared[method.spec] = self.engine.prepare(method)
            except ValueError as e:
                raise APIError(f"method {method.spec} cannot run on this server: {e}", param="model") from None
        return method

    def sampling(self, req, max_new_tokens: int) -> SamplingConfig:
        limits = self.cfg.limits
        if max_new_tokens > limits.max_tokens:
            raise APIError(
                f"max_tokens={max_new_tokens} is over the server's limit of {limits.max_tokens} (--max-tokens)",
                param="max_tokens",
            )
        if req.n > limits.max_n:
            raise APIError(f"n={req.n} is over the server's limit of {limits.max_n} (--max-n)", param="n")
        stop = req.stop_strings()
        limits.check_stop(stop)
        try:
            return SamplingConfig(
                temperature=req.temperature,
                top_k=max(req.top_k, 0),
                top_p=req.top_p,
                max_new_tokens=max(max_new_tokens, 1),
                stop=stop,
                seed=0,
            )
        except ValueError as e:
            raise APIError(str(e)) from None

    def check_context(self, prompt_ids: list[list[int]], max_new_tokens: int, param: str = "max_tokens") -> None:
        """Refuse a prompt that leaves no room for ``max_new_tokens`` in the local strong model's context, naming
        the request's field (the engine's own check would name its ``max_new_tokens``)."""
        lm = getattr(self.engine.policy, "lm", None)
        n = max((len(ids) for ids in prompt_ids), default=0)  # the longest prompt
        error = context_error(n, max_new_tokens, lm.max_length if lm is not None else None, param)
        if error is not None:
            raise APIError(error, param=param)

    async def run(
        self, prompts: list[str], guide_prompts: list[str], method: Method, sampling: SamplingConfig, seed: int, n: int
    ) -> list:
        """SearchResults, n per prompt (prompt-major, as OpenAI orders choices)."""
        run = self._prepared[method.spec]  # prepared by method(), which every route calls first
        jobs = [
            Job(p, g, choice_seed(seed, p, i), run, sampling) for p, g in zip(prompts, guide_prompts) for i in range(n)
        ]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in self.batcher.submit(jobs))))

    def tilt(self, method: Method) -> Tilt:
        """The guide tilt of ``method`` for log-likelihoods, made once (used on the model thread only)."""
        if method.spec not in self._tilts:
            self._tilts[method.spec] = Tilt(terms_for(self.engine, method), 8)
        return self._tilts[method.spec]

    def encode(self, prompt: str) -> list[int]:
        """The prompt's tokens as the strong model reads them (:func:`~w2s_eval.policy.encode_prompt`)."""
        policy = self.engine.policy
        return (
            []
            if self.tokenizer is None
            else encode_prompt(self.tokenizer, prompt, getattr(policy, "add_special_tokens", None), policy.name)
        )

    def completion_ids(self, result) -> list[int]:
        """The best beam's tokens as the strong model generated them (cut with the text at a stop string), plus
        the end-of-sequence token when the response ended on it, as vLLM reports it (so a one-token completion
        always has one entry: lm-eval drops the last)."""
        beam = result.beams[0]
        return list(beam.token_ids) + ([self.eos_id] if beam.eos and self.eos_id is not None else [])

    def decode_prompt(self, prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if self.tokenizer is None:
            raise APIError("token-id prompts need the strong model's tokenizer; send text", param="prompt")
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for t in prompt):
            raise APIError(f"prompt token ids must lie in [0, {vocab})", param="prompt")
        return self.tokenizer.decode(prompt)


def _eos_id(lm) -> Optional[int]:
    """The EOS id a response's logprobs name: the tokenizer's when it is one the model stops on, else the
    model's first (a model with several reports this one, whichever ended the response)."""
    ids = lm.eos_ids
    eos = lm.tokenizer.eos_token_id
    return eos if eos in ids else (ids[0] if ids else None)


def _usage(prompt_ids: list[list[int]], results: list) -> dict:
    prompt_tokens = sum(len(p) for p in prompt_ids)
    completion = sum(r.beams[0].n_tokens if r.beams else 0 for r in results)
    w2s = {k: sum(r.stats.get(k, 0) for r in results) for k in ("strong_tokens", "guide_tokens", "rounds", "samples")}
    compute: dict = {}
    for r in results:
        add_costs(compute, costs_from_dict(r.stats.get("compute") or {}))
    w2s["compute"] = costs_to_dict(compute)  # per model role: tokens and FLOPs, prefill and forward (w2s_eval.flops)
    w2s["flops"] = total_flops(compute.values())
    w2s["scores"] = [r.score for r in results]
    w2s["beam_scores"] = [[b.score for b in r.beams] for r in results]
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "w2s": w2s,
    }


def _finish(result) -> str:
    return "stop" if result.beams and result.beams[0].ended else "length"


def _new_seed(seed: Optional[int]) -> int:
    return secrets.randbits(63) if seed is None else seed


async def completions(server: Server, req: CompletionRequest) -> dict:
    req.refuse_unsupported()
    raw = req.prompts()
    if len(raw) > server.cfg.limits.max_prompts:
        raise APIError(
            f"{len(raw)} prompts in one request; the server's limit is {server.cfg.limits.max_prompts} (--max-prompts)",
            param="prompt",
        )
    sampling = server.sampling(req, req.max_tokens)
    method = server.method(req, req.max_tokens, len(raw))
    texts = [server.decode_prompt(p) for p in raw]
    ids = [list(p) if not isinstance(p, str) else server.encode(p) for p in raw]
    seed = _new_seed(req.seed)
    if req.max_tokens > 0:
        server.check_context(ids, req.max_tokens)
        results = await server.run(texts, texts, method, sampling, seed, req.n)
    else:
        results = [None] * (len(texts) * req.n)
    logprobs = await _logprobs(server, req, method, ids, results) if req.logprobs is not None else None
    choices = []
    for i, r in enumerate(results):
        text = r.text if r is not None else ""
        choices.append(
            {
                "index": i,
                "text": (texts[i // req.n] + text) if req.echo else text,
                "logprobs": logprobs[i] if logprobs else None,
                "finish_reason": _finish(r) if r is not None else "length",
            }
        )
    usage = _usage(ids, [r for r in results if r is not None])
    usage["w2s"].update(method=method.spec, seed=seed)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": usage,
    }


async def _logprobs(server: Server, req: CompletionRequest, method: Method, ids: list[list[int]], results) -> list:
    """One logprobs object per choice: the prompt's tokens (with echo), then the completion's."""
    if server.tokenizer is None or not hasattr(server.engine.policy, "lm"):
        raise APIError(
            "logprobs need a local strong model (this server's strong model is an endpoint)", param="logprobs"
        )
    n, seqs, starts = req.n, [], []
    if req.echo:
        seqs += ids
        starts += [0] * len(ids)
    comp_at = len(seqs)
    for i, r in enumerate(results):
        if r is not None:
            seqs.append(ids[i // n] + server.completion_ids(r))
            starts.append(len(ids[i // n]))

    def fn():
        return score_sequences(server.engine, method, seqs, starts, req.logprobs, tilt=server.tilt(method))

    scored = await asyncio.wrap_future(server.batcher.call(fn))
    out = []
    for i, r in enumerate(results):
        parts = ([scored[i // n]] if req.echo else []) + ([scored[comp_at + i]] if r is not None else [])
        merged = {key: [] for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
        for part in parts:
            for key, values in part.to_dict().items():
                merged[key] += values
        if not req.echo and merged["text_offset"]:  # offsets into the completion's text
            base = merged["text_offset"][0]
            merged["text_offset"] = [o - base for o in merged["text_offset"]]
        out.append(merged)
    return out


async def chat_completions(server: Server, req: ChatRequest) -> dict:
    req.refuse_unsupported()
    limits = server.cfg.limits
    sampling = server.sampling(req, req.new_tokens(min(limits.default_chat_tokens, limits.max_tokens)))
    method = server.method(req, sampling.max_new_tokens, 1)
    tok = server.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise APIError(
            "the strong model's tokenizer has no chat template; use /v1/completions with your own prompt format",
            param="messages",
        )
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = [server.encode(prompt)]
    server.check_context(ids, sampling.max_new_tokens, req.tokens_param)
    seed = _new_seed(req.seed)
    results = await server.run([prompt], [req.last_user_turn()], method, sampling, seed, req.n)
    choices = [
        {"index": i, "message": {"role": "assistant", "content": r.text}, "logprobs": None, "finish_reason": _finish(r)}
        for i, r in enumerate(results)
    ]
    usage = _usage(ids, results)
    usage["w2s"].update(method=method.spec, seed=seed)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": usage,
    }


def _error(status: int, message: str, **kw) -> JSONResponse:
    return JSONResponse(error_body(message, **kw), status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts[:5])


async def _answer(coro) -> JSONResponse:
    try:
        return JSONResponse(await coro)
    except APIError as e:
        return _error(e.status, e.message, type=e.type, param=e.param, code=e.code)
    except ValueError as e:  # the engine's checks of a request (prompt too long, bad settings)
        return _error(400, str(e))
    except Exception as e:  # noqa: BLE001 (logged here; the client gets the message, not a traceback)
        logger.exception("request failed")
        return _error(500, f"internal error: {type(e).__name__}: {e}", type="server_error")


def create_app(engine, cfg: ServeConfig, default: Method):
    """The ASGI app (FastAPI behind :class:`~.guard.Guard`) serving ``engine``."""
    server = Server(engine, cfg, default)
    api = FastAPI(title="w2s-eval serve", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.server = server

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(400, _validation_message(exc))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(
            exc.status_code,
            f"{request.method} {request.url.path}: {exc.detail}",
            code="not_found" if exc.status_code == 404 else None,
        )

    @api.post("/v1/completions")
    async def _completions(req: CompletionRequest):
        return await _answer(completions(server, req))

    @api.post("/v1/chat/completions")
    async def _chat(req: ChatRequest):
        return await _answer(chat_completions(server, req))

    @api.get("/v1/models")
    async def _models():
        names = [(cfg.served_model_name, default.spec), (default.spec, default.spec), ("base", "base")]
        data, seen = [], set()
        for name, spec in names:
            if name not in seen:
                seen.add(name)
                data.append({"id": name, "object": "model", "created": 0, "owned_by": "w2s-eval", "method": spec})
        return {"object": "list", "data": data}

    @api.get("/health")
    async def _health():
        return {
            "status": "ok",
            "method": default.spec,
            **server.batcher.stats,
            "queued": server.batcher.queued,
            **guard.stats,
        }

    guard = Guard(api, cfg.api_key, cfg.max_request_bytes, cfg.body_timeout)
    return guard
