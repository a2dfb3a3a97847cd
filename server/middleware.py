"""ASGI middleware: API-key check, and one log line plus the request metrics per HTTP request."""

from __future__ import annotations

import hmac
import logging
import time
import uuid

from fastapi.responses import JSONResponse

from .errors import error_body
from .metrics import Metrics

log = logging.getLogger("introllm.server")

ENDPOINTS = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"}


class Auth:
    """ASGI middleware: /v1/* needs ``Authorization: Bearer <api key>``; checked before the body is read."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1/"):
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
