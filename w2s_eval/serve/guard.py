"""ASGI middleware in front of every route: the API key and the request size.

Plain ASGI (no framework types), so it wraps the whole app, unknown routes included.
The body is read here (at most ``max_bytes``) and handed on unchanged.
"""

from __future__ import annotations

import hmac
import json
from typing import Optional

from .protocol import error_body

__all__ = ["Guard"]


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


async def _drain(receive, cap: int) -> None:
    """Read and drop the rest of a refused request's body (at most ``cap`` bytes), so the client finishes
    sending and reads the error instead of a reset connection (closing on unread data resets it)."""
    size = 0
    while size <= cap:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        size += len(message.get("body", b""))


class Guard:
    """Refuse a request without ``Authorization: Bearer <api_key>`` (401) when a key is set, and a
    body over ``max_bytes`` (413); pass everything else to ``app``."""

    def __init__(self, app, api_key: Optional[str], max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.drain_cap = 16 * max_bytes  # a refused body up to this size is read and dropped before the answer
        self.key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await _drain(receive, self.drain_cap)
                return await _send_json(send, 401, error_body(
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key the server "
                    "was started with (--api-key)", type="authentication_error", code="invalid_api_key"),
                    ((b"www-authenticate", b"Bearer"),))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_cap:
                await _drain(receive, self.drain_cap)
            return await _send_json(send, 413, self._too_large())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _drain(receive, self.drain_cap)
                return await _send_json(send, 413, self._too_large())
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self) -> dict:
        return error_body(f"request body over the server's limit of {self.max_bytes} bytes (--max-request-bytes); "
                          "send fewer or shorter prompts per request", code="request_too_large")
