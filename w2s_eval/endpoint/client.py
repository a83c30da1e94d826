"""An OpenAI-compatible ``/v1/completions`` client: many requests in flight, bounded retries.

The search is synchronous; the requests of one round are not. :class:`CompletionClient`
keeps one asyncio loop in a background thread (so it also works where the caller
already runs a loop, e.g. a notebook) with one ``openai.AsyncOpenAI`` client, and
:meth:`CompletionClient.complete_many` sends a list of request bodies concurrently,
at most ``max_concurrency`` in flight, and returns the responses in order.

Faults: HTTP 408/409/429/5xx, timeouts and refused or dropped connections are retried
``max_retries`` times with exponential backoff (``backoff`` doubling up to
``max_backoff`` seconds; a 429's ``Retry-After`` is honoured within that bound). When the
retries run out, :class:`EndpointError` names the endpoint. Other HTTP errors (400: bad
request or too long a prompt, 401/403: API key, 404: unknown model) raise ValueError at once.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..checks import check_positive_int
from ..extras import require

logger = logging.getLogger(__name__)

__all__ = ["EndpointError", "CompletionClient", "ClientStats"]

RETRY_STATUS = frozenset({408, 409, 429})
_OPEN: "weakref.WeakSet[CompletionClient]" = weakref.WeakSet()


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # already closed
        pass


@atexit.register
def _close_all() -> None:
    for client in list(_OPEN):
        client.close()


class EndpointError(ConnectionError):
    """The strong-model endpoint failed (unreachable, dead, or answered wrongly) after retries."""


@dataclass
class ClientStats:
    """Counters of one client: requests sent, retries, seconds waiting for responses."""

    requests: int = 0
    retries: int = 0
    request_time_s: float = 0.0  # summed over requests (they overlap)
    wall_time_s: float = 0.0  # wall time inside complete_many
    errors: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "request_time_s": round(self.request_time_s, 4),
            "wall_time_s": round(self.wall_time_s, 4),
            "errors": dict(self.errors),
        }


def _import_openai():
    require("openai", "endpoint")
    import openai  # optional dependency (the [endpoint] extra), imported when an endpoint is used

    return openai


def _check_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"strong_endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
    return base_url.rstrip("/")


class CompletionClient:
    """Concurrent, retrying ``/v1/completions`` requests to one OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        api_key_env: Optional[str] = "OPENAI_API_KEY",
        timeout: float = 300.0,
        max_concurrency: int = 64,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
    ):
        self.base_url = _check_url(base_url)
        check_positive_int("max_concurrency", max_concurrency)
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if backoff < 0 or max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0 seconds")
        self.api_key_env = api_key_env
        self.timeout, self.max_concurrency, self.max_retries = float(timeout), max_concurrency, max_retries
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.stats = ClientStats()
        self._openai = _import_openai()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._client = None
        self._sem: Optional[asyncio.Semaphore] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ event loop
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="w2s-endpoint", daemon=True)
                self._thread.start()
                _OPEN.add(self)
                weakref.finalize(self, _stop_loop, self._loop)  # no thread outlives its client
            return self._loop

    def _run(self, coro):
        fut = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def close(self) -> None:
        """Close the HTTP client and stop the background loop (a later call starts them again)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or loop.is_closed():
            return
        client, self._client, self._sem = self._client, None, None
        if client is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
            except Exception:  # closing is best effort
                logger.debug("closing the endpoint client failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()

    def _api(self):
        """The AsyncOpenAI client and semaphore (made inside the background loop)."""
        if self._client is None:
            key = (os.environ.get(self.api_key_env) if self.api_key_env else None) or "EMPTY"
            # retries are ours (they count, log and name the endpoint); the client's are off
            self._client = self._openai.AsyncOpenAI(
                base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=0
            )
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._client, self._sem

    # ------------------------------------------------------------------ requests
    def _delay(self, attempt: int, error: Exception) -> float:
        delay = min(self.backoff * (2**attempt), self.max_backoff)
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = min(max(delay, float(retry_after)), self.max_backoff)
            except ValueError:
                pass
        return delay

    def _fatal(self, error) -> ValueError:
        status, message = error.status_code, getattr(error, "message", str(error))
        hint = {
            401: f"set the API key in ${self.api_key_env}",
            403: f"set the API key in ${self.api_key_env}",
            404: "check strong_model (the served model name: GET /v1/models lists it) and the URL (it ends in /v1)",
            400: "the server's message says why (e.g. a prompt + max_new_tokens beyond its --max-model-len, "
            "or a parameter it does not support)",
        }
        return ValueError(
            f"strong-model endpoint {self.base_url} rejected the request (HTTP {status}): {message}; "
            f"{hint.get(status, 'see the server log')}"
        )

    async def _one(self, body: dict, method: str = "completions") -> dict:
        openai = self._openai
        client, sem = self._api()
        last: Optional[Exception] = None
        for attempt in range(self.max_retries + 1):
            try:
                async with sem:
                    t0 = time.perf_counter()
                    try:
                        if method == "models":
                            resp = await client.models.list()
                            return {"data": [m.model_dump() for m in resp.data]}
                        body = dict(body)
                        extra = body.pop("extra_body", None)
                        resp = await client.completions.create(**body, extra_body=extra)
                        return resp.model_dump()
                    finally:
                        self.stats.requests += 1
                        self.stats.request_time_s += time.perf_counter() - t0
            except openai.APIStatusError as e:
                if e.status_code not in RETRY_STATUS and e.status_code < 500:
                    raise self._fatal(e) from None
                last = e
            except (openai.APIConnectionError, asyncio.TimeoutError) as e:  # refused, dropped, timed out
                last = e
            name = type(last).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            if attempt == self.max_retries:
                break
            delay = self._delay(attempt, last)
            self.stats.retries += 1
            logger.warning(
                "strong-model endpoint %s: %s (%s); retry %d/%d in %.1f s",
                self.base_url,
                name,
                _describe(last),
                attempt + 1,
                self.max_retries,
                delay,
            )
            await asyncio.sleep(delay)
        raise EndpointError(
            f"strong-model endpoint {self.base_url} failed after {self.max_retries + 1} attempts: "
            f"{type(last).__name__} ({_describe(last)}). Is the server running and reachable? Start it (see "
            "docs/endpoint.md) and run the same command again: finished records are kept and the run resumes"
        ) from last

    async def _many(self, bodies: Sequence[dict], progress) -> list[dict]:
        async def tracked(body):
            out = await self._one(body)
            if progress is not None:
                progress.update(1)
            return out

        tasks = [asyncio.ensure_future(tracked(b)) for b in bodies]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def complete_many(self, bodies: Sequence[dict], progress=None) -> list[dict]:
        """POST every body to ``/completions`` concurrently; the response dicts in order."""
        if not bodies:
            return []
        t0 = time.perf_counter()
        try:
            return self._run(self._many(list(bodies), progress))
        finally:
            self.stats.wall_time_s += time.perf_counter() - t0

    def list_models(self) -> list[dict]:
        """``GET /models``: the served models (``id``, and vLLM's ``max_model_len``, ``root``)."""
        return self._run(self._one({}, method="models"))["data"]


def _describe(error: Optional[Exception]) -> str:
    if error is None:
        return "no response"
    status = getattr(error, "status_code", None)
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause):
        text = f"{text}: {str(cause).splitlines()[0][:200]}"
    return f"HTTP {status}: {text}" if status else text
