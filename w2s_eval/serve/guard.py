"""ASGI middleware in front of every route: the API key, the request size, the body's read time, a client that
hangs up, and a server that shuts down.

Plain ASGI (no framework types), so it wraps the whole app, unknown routes included.
The body is read here (at most ``max_bytes``, within ``body_timeout`` seconds) and handed on
unchanged. The app then runs as its own task, while the guard waits for the client to hang up:
a client that goes away cancels the app's task, whose queued prompts are then skipped by the
batcher (a cancelled future). A task cancelled from outside (uvicorn after ``--shutdown-timeout``
on SIGTERM/SIGINT) is answered with a JSON 503 instead of uvicorn's plain 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Optional

from .protocol import error_body

logger = logging.getLogger(__name__)

__all__ = ["Guard"]

_CLOSE = (b"connection", b"close")


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _BodyTimeout(Exception):
    """The client did not send its body within the guard's ``body_timeout``."""


class _TooLarge(Exception):
    """The body is over the guard's ``max_bytes`` (its rest was drained)."""


class _Reader:
    """``receive`` with one deadline for the whole body (``body_timeout`` seconds from the request's start)."""

    def __init__(self, receive, timeout: float):
        self.receive, self.deadline = receive, asyncio.get_running_loop().time() + timeout

    async def __call__(self) -> dict:
        left = self.deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self.receive(), max(left, 0.0))
        except asyncio.TimeoutError:
            raise _BodyTimeout from None


async def _drain(read: _Reader, cap: int) -> None:
    """Read and drop the rest of a refused request's body (at most ``cap`` bytes, within the body's deadline),
    so the client finishes sending and reads the error instead of a reset connection (closing on unread data
    resets it)."""
    size = 0
    try:
        while size <= cap:
            message = await read()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            size += len(message.get("body", b""))
    except _BodyTimeout:
        return


class Guard:
    """Refuse a request without ``Authorization: Bearer <api_key>`` (401) when a key is set, a body over
    ``max_bytes`` (413) or one not sent within ``body_timeout`` seconds (408); run everything else in ``app``
    (cancelled when the client hangs up; a JSON 503 when the server cancels it on shutdown). Refusals close the
    connection."""

    def __init__(self, app, api_key: Optional[str], max_bytes: int, body_timeout: float = 30.0):
        self.app, self.max_bytes, self.body_timeout = app, max_bytes, body_timeout
        self.drain_cap = 16 * max_bytes  # a refused body up to this size is read and dropped before the answer
        self.key = api_key.encode("utf-8") if api_key else None
        self.stats = {"disconnected": 0, "shutdown_503": 0, "body_timeouts": 0}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        read = _Reader(receive, self.body_timeout)
        headers = dict(scope.get("headers") or [])
        if self.key is not None:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await _drain(read, self.drain_cap)
                return await _send_json(
                    send,
                    401,
                    error_body(
                        "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key the "
                        "server was started with (--api-key)",
                        type="authentication_error",
                        code="invalid_api_key",
                    ),
                    ((b"www-authenticate", b"Bearer"), _CLOSE),
                )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_cap:
                await _drain(read, self.drain_cap)
            return await _send_json(send, 413, self._too_large(), (_CLOSE,))
        try:
            body = await self._body(read)
        except _TooLarge:
            return await _send_json(send, 413, self._too_large(), (_CLOSE,))
        except _BodyTimeout:
            self.stats["body_timeouts"] += 1
            return await _send_json(
                send,
                408,
                error_body(
                    f"the request body was not received within {self.body_timeout:g} s (--body-timeout)",
                    code="request_timeout",
                ),
                (_CLOSE,),
            )
        if body is None:  # the client went away before sending its body
            return None
        return await self._run(scope, receive, send, body)

    async def _body(self, read: _Reader) -> Optional[bytes]:
        """The whole body; None when the client went away first; :class:`_TooLarge` when it is over ``max_bytes``
        (its rest drained); :class:`_BodyTimeout` when it is not all there within ``body_timeout``."""
        chunks, size = [], 0
        while True:
            message = await read()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _drain(read, self.drain_cap)
                raise _TooLarge
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _run(self, scope, receive, send, body: bytes) -> None:
        """Run the app on ``body``, as a task that the client's hanging up cancels."""
        gone = asyncio.Event()
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # the app asks again only to learn of a disconnect
            return {"type": "http.disconnect"}

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass  # (no more body after the last chunk; a server sends nothing else)
            gone.set()

        started = False

        async def tracked_send(message):
            nonlocal started
            started = True
            await send(message)

        app = asyncio.ensure_future(self.app(scope, replay, tracked_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is shutting down (uvicorn cancels the request's task)
            app.cancel()
            watcher.cancel()
            if not started:
                self.stats["shutdown_503"] += 1
                await _send_json(
                    send,
                    503,
                    error_body(
                        "the server is shutting down; send the request again (to this server once it is back, or to "
                        "another)",
                        type="server_error",
                        code="server_shutting_down",
                    ),
                    ((b"retry-after", b"1"), _CLOSE),
                )
            return
        if not app.done():  # the client hung up: stop its work (queued prompts are skipped)
            self.stats["disconnected"] += 1
            app.cancel()
            await asyncio.gather(app, return_exceptions=True)
            return
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        return app.result()

    def _too_large(self) -> dict:
        return error_body(
            f"request body over the server's limit of {self.max_bytes} bytes (--max-request-bytes); "
            "send fewer or shorter prompts per request",
            code="request_too_large",
        )
