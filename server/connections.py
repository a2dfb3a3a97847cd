"""Connection limits that an ASGI app cannot set: how long a client may take to send a request's
head, how big a head may be, and how many connections may be open.

uvicorn has a keep-alive timeout but no deadline for a request head that arrives slowly (a
client sending a byte a second holds its connection for ever) and, with httptools, no cap on a
head's size; its ``limit_concurrency`` answers 503 in plain text. ``protocol_class`` extends
uvicorn's own HTTP protocol (httptools when installed, else h11: what ``http="auto"`` picks) with

* a deadline: from the moment a connection opens, and again from the end of each response, the
  client has ``read_timeout`` seconds to complete its next request head. A client that started a
  head and did not finish it gets ``408`` (OpenAI-style JSON body) and the connection is closed; an
  idle one is closed quietly (uvicorn's keep-alive timeout usually does that first). The body's
  deadline is ``middleware.BodyLimit``'s, which can answer inside the request;
* a head of at most ``MAX_HEAD_BYTES`` (``431`` beyond it);
* at most ``max_connections`` open connections: a connection beyond the cap gets ``503`` with
  ``Retry-After`` for its request and is then closed.

``server_config`` builds the uvicorn configuration with this protocol (``introllm serve`` and the
tests run the same one).
"""

from __future__ import annotations

import asyncio
import http
import json
import logging

from .config import ServerConfig
from .errors import error_body

log = logging.getLogger("introllm.server")

MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) in bytes."""
RETRY_AFTER_SECONDS = 1


def raw_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with an OpenAI-style error body that closes the connection."""
    body = json.dumps(error_body(message, code=code)).encode()
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _over_capacity(scope, receive, send) -> None:
    """The app of a connection beyond ``max_connections``: 503, then the connection closes."""
    body = json.dumps(
        error_body("the server has too many open connections; retry shortly", type="server_error", code="overloaded")
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Guard:
    """The deadline, head-size and connection-count rules, mixed into a uvicorn HTTP protocol.
    ``_in_head()`` (per implementation) says whether part of a request head has arrived."""

    read_timeout: float = 30.0
    max_connections: int = 512
    _head_too_large = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            log.warning("%d open connections: refusing one more (--max-connections)", len(self.connections))
            self.app = _over_capacity
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head completed: its body's deadline is BodyLimit's
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        """A head the parser refused: OpenAI-style JSON instead of uvicorn's plain text (431 for a
        head over MAX_HEAD_BYTES, which the parser callbacks below flag)."""
        if self._head_too_large:
            self._refuse(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes", "header_too_large")
        else:
            self._refuse(400, "invalid HTTP request", "invalid_http_request")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_head():
            self._refuse(
                408, f"the request head did not arrive within {self.read_timeout:g} seconds", "request_timeout"
            )
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()  # idle, or still sending the body of a request already answered

    def _refuse(self, status: int, message: str, code: str) -> None:
        self._disarm()
        self.transport.write(raw_response(status, message, code))
        self.transport.close()


def protocol_class(config: ServerConfig) -> type:
    """uvicorn's HTTP protocol (httptools if installed, else h11) with the rules of this module."""
    settings = {"read_timeout": config.read_timeout, "max_connections": config.max_connections}
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without its [standard] extras
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class GuardedH11(_Guard, H11Protocol):  # h11 itself caps the head (h11_max_incomplete_event_size)
            def _in_head(self) -> bool:
                return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

        return type("GuardedH11", (GuardedH11,), settings)

    class GuardedHttpTools(_Guard, HttpToolsProtocol):
        _head_started = False
        _head_size = 0

        def on_message_begin(self) -> None:
            self._head_started, self._head_size = True, 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._grow(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._grow(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _grow(self, size: int) -> None:
            """Count the head's bytes; beyond the cap the parser stops (its error: send_400_response)."""
            self._head_size += size
            if self._head_size > MAX_HEAD_BYTES:
                self._head_too_large = True
                raise ValueError("request head too large")

        def on_headers_complete(self) -> None:
            self._head_started = False
            super().on_headers_complete()

        def _in_head(self) -> bool:
            return self._head_started

    return type("GuardedHttpTools", (GuardedHttpTools,), settings)


def server_config(app, config: ServerConfig, **overrides):
    """The ``uvicorn.Config`` that serves ``app`` under ``config``'s connection limits."""
    import uvicorn

    settings = dict(
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=False,
        http=protocol_class(config),
        timeout_keep_alive=config.keep_alive,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
