"""Connection limits of ``w2s-eval serve`` below the app: a header read timeout and a cap on open connections.

uvicorn's h11 protocol has a keep-alive timeout for idle connections but none for a request whose
headers arrive slowly (a partial request cancels the keep-alive timer), so a stalled client is held
forever, before any key is checked. :func:`protocol_class` gives uvicorn an h11 protocol that also

- closes a connection whose request headers are not complete within ``header_timeout`` seconds of
  its opening or of the last response (answering 408 when part of a request came);
- answers a connection beyond ``max_connections`` open ones with a JSON 503 and closes it.

The body's read time is the :class:`~.guard.Guard`'s (``body_timeout``); the head's size is h11's
``h11_max_incomplete_event_size``. See :func:`uvicorn_settings`.
"""

from __future__ import annotations

import json
import logging

from .protocol import ServeConfig, error_body

logger = logging.getLogger(__name__)

__all__ = ["protocol_class", "uvicorn_settings"]


def _raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response with OpenAI's error JSON, for writing before h11 has a request to answer."""
    body = json.dumps(
        error_body(message, type="server_error" if status >= 500 else "invalid_request_error", code=code)
    ).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def protocol_class(header_timeout: float, max_connections: int):
    """uvicorn's h11 protocol with a header read timeout and a connection cap (see the module doc)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol  # uvicorn: the [serve] extra, loaded by run_serve only

    class LimitedH11Protocol(H11Protocol):
        _header_timer = None
        _partial = False  # bytes of a request came since the last response

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                logger.warning(
                    "refusing a connection: %d open, the limit is %d (--max-connections)",
                    len(self.connections) - 1,
                    max_connections,
                )
                transport.write(
                    _raw_response(
                        503,
                        "Service Unavailable",
                        f"the server has {max_connections} open "
                        "connections, its limit (--max-connections); try again later",
                        "too_many_connections",
                    )
                )
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._partial = True
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._partial = False
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _header_timed_out(self) -> None:
            self._header_timer = None
            waiting = self.cycle is None or self.cycle.response_complete  # no request whose head came
            if not waiting or self.transport.is_closing():
                return
            if self._partial:
                self.transport.write(
                    _raw_response(
                        408,
                        "Request Timeout",
                        f"the request headers were not received within {header_timeout:g} s (--header-timeout)",
                        "request_timeout",
                    )
                )
            self.transport.close()

    return LimitedH11Protocol


def uvicorn_settings(cfg: ServeConfig) -> dict:
    """The keyword arguments of ``uvicorn.run`` that bound connections, from the server's settings."""
    return {
        "http": protocol_class(cfg.header_timeout, cfg.max_connections),
        "timeout_keep_alive": cfg.keep_alive_timeout,
        "h11_max_incomplete_event_size": cfg.max_header_bytes,
        "timeout_graceful_shutdown": cfg.shutdown_timeout,
    }
