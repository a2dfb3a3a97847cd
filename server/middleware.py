"""ASGI middleware: API-key check, the request body's size and read deadline, and one log line
plus the request metrics per HTTP request."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid

from fastapi.responses import JSONResponse

from .errors import error_body
from .metrics import Metrics

log = logging.getLogger("introllm.server")

ENDPOINTS = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"}


# Paths that need the API key besides /v1/*: what the server serves that describes its use.
KEYED = frozenset({"/metrics", "/openapi.json", "/docs", "/redoc"})


class Auth:
    """ASGI middleware: /v1/*, /metrics (unless ``public_metrics``) and the API description need
    ``Authorization: Bearer <api key>``; checked before the body is read. /health and the
    playground page stay open (a browser cannot send the key with a page load)."""

    def __init__(self, app, api_key: str, public_metrics: bool = False):
        self.app = app
        self.key = api_key.encode()
        self.keyed = KEYED - {"/metrics"} if public_metrics else KEYED

    def needs_key(self, path: str) -> bool:
        """Whether a request for ``path`` must carry the key."""
        return path.startswith("/v1/") or path in self.keyed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.needs_key(scope.get("path", "")):
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            scheme, _, key = header.partition(" ")
            problem = None
            if not header:
                problem = "missing API key: send 'Authorization: Bearer <key>'"
            elif scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.key):
                problem = "incorrect API key provided"
            if problem:
                response = JSONResponse(error_body(problem, code="invalid_api_key"), status_code=401)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: reads each request's body before the app does, within limits.

    A body longer than ``max_bytes`` is answered 413: at once when its Content-Length says so
    (nothing of it is read), else as soon as the bytes read pass the limit. A body not complete
    within ``timeout`` seconds of its head is answered 408 and the connection closed (a client
    that sends a byte a second cannot hold a worker). The app then receives the body in one
    message; later ``receive`` calls (the disconnect) go to the server as before."""

    def __init__(self, app, max_bytes: int, timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, receive, send, int(declared))
        chunks, size = [], 0

        async def read() -> bool:  # False: the client went away
            nonlocal size
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_bytes or not message.get("more_body", False):
                    return True

        try:
            complete = await asyncio.wait_for(read(), self.timeout)
        except asyncio.TimeoutError:
            response = JSONResponse(
                error_body(
                    f"the request body did not arrive within {self.timeout:g} seconds",
                    code="request_timeout",
                ),
                status_code=408,
                headers={"Connection": "close"},
            )
            return await response(scope, receive, send)
        if not complete:
            return None
        if size > self.max_bytes:
            return await self._too_large(scope, receive, send, None)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else f"more than {self.max_bytes} bytes"
        response = JSONResponse(
            error_body(
                f"the request body has {size}; this server takes at most {self.max_bytes} bytes (--max-body-mb)",
                code="request_too_large",
            ),
            status_code=413,
        )
        await response(scope, receive, send)


class RequestLog:
    """ASGI middleware: a request id, one log line and the request metrics per HTTP request."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        start = time.monotonic()
        status = [0]
        logged = [False]
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"

        def finish(outcome: int) -> None:
            if logged[0]:
                return
            logged[0] = True
            seconds = time.monotonic() - start
            self.metrics.requests.labels(endpoint=endpoint, status=str(outcome)).inc()
            if endpoint.startswith("/v1/") and endpoint != "/v1/models":
                self.metrics.request_latency.observe(seconds)
                prompt, completion = scope["state"].get("usage", (0, 0))
                log.info(
                    "%s %s %s %d prompt=%d completion=%d %.0f ms",
                    rid,
                    scope["method"],
                    path,
                    outcome,
                    prompt,
                    completion,
                    seconds * 1000,
                )

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish(scope["state"].get("outcome", status[0]))

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish(499)  # no-op after a complete response; otherwise the client went away mid-way
