"""The HTTP server: OpenAI-compatible completions with per-token temperature traces.

Routes (handlers in routes.py): ``POST /v1/completions``, ``POST /v1/chat/completions``,
``GET /v1/models``, ``GET /health`` (503 until the model is loaded), ``GET /metrics`` (Prometheus
text), ``GET /openapi.json`` (the OpenAPI document, error bodies and the trace included).

Temperature semantics (DESIGN.md): ``temperature`` omitted -> the learned policy; a number -> that
fixed temperature, 0 -> greedy; the ``policy`` extension field picks any policy by name. Each
choice carries ``temperature_trace`` = {token_ids, tokens, temperatures, updated}, one entry per
generated token; in a stream, each chunk carries the entries of the tokens it adds.

Every error is an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}`` with a 4xx
status that names the problem (5xx only for failures of the server itself).

Limits for exposed deployments (docs/deployment.md): a request body over ``--max-body-mb`` is
answered 413 before it is read, a head or body slower than ``--read-timeout`` 408, a connection
beyond ``--max-connections`` 503 (connections.py), a request beyond the batch and the queue 429
with ``Retry-After``; ``--api-key`` covers /v1/*, /metrics and /openapi.json.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import openapi, routes
from .config import ServerConfig
from .connections import server_config
from .errors import APIError, describe_validation, error_body
from .metrics import Metrics
from .middleware import Auth, BodyLimit, RequestLog
from .state import ServerState
from .ui import add_ui

log = logging.getLogger("introllm.server")


async def _api_error(request: Request, exc: APIError):
    return JSONResponse(
        error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status, headers=exc.headers
    )


async def _invalid(request: Request, exc: RequestValidationError):
    return JSONResponse(error_body(*describe_validation(exc)), status_code=400)


async def _http(request: Request, exc: StarletteHTTPException):
    message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body
        message[400] = f"the request body could not be parsed: {exc.__cause__}"
    return JSONResponse(  # a 405 keeps its Allow header
        error_body(message.get(exc.status_code, str(exc.detail)), "invalid_request_error"),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _internal(request: Request, exc: Exception):
    log.exception("unhandled error on %s", request.url.path)
    return JSONResponse(error_body("internal server error", "server_error"), status_code=500)


def create_app(config: ServerConfig, checkpoint=None, loader=None) -> FastAPI:
    """The ASGI app. ``checkpoint`` (a loaded sampler.checkpoint.Checkpoint) skips loading;
    ``loader`` (a function returning one) replaces the default loading from ``config``.
    More routes can be added to the returned app (``app.include_router``)."""
    metrics = Metrics()
    state = ServerState(config, metrics, checkpoint, loader)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, name="introllm-load", daemon=True).start()
        yield
        state.shutdown()

    app = FastAPI(title="IntroLLM", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.introllm = state
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _internal)
    # innermost first: the body is read (within its limits) only once the key has been checked
    app.add_middleware(BodyLimit, max_bytes=int(config.max_body_mb * 1e6), timeout=config.read_timeout)
    if config.api_key:
        app.add_middleware(Auth, api_key=config.api_key, public_metrics=config.public_metrics)
    app.add_middleware(RequestLog, metrics=metrics)  # outermost: logs and counts the 401s too

    app.add_api_route("/health", routes.health, methods=["GET"], responses=openapi.HEALTH)
    app.add_api_route("/metrics", routes.prometheus, methods=["GET"], responses=openapi.METRICS)
    app.add_api_route("/v1/models", routes.models, methods=["GET"], responses=openapi.MODELS)
    app.add_api_route("/v1/completions", routes.completions, methods=["POST"], responses=openapi.COMPLETION)
    app.add_api_route(
        "/v1/chat/completions", routes.chat_completions, methods=["POST"], responses=openapi.CHAT_COMPLETION
    )
    openapi.install(app, state)
    add_ui(app, config)  # the playground page at / (server/ui.py); off with --no-ui
    return app


def serve(config: ServerConfig) -> None:
    """Run the server until interrupted (``introllm serve``).

    Raises RuntimeError with one line naming the cause and the flag that fixes it when the model
    fails to load (the server stops instead of answering 503 forever)."""
    import uvicorn

    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this port can use the model", config.host)
    app = create_app(config)
    server = uvicorn.Server(server_config(app, config))
    state: ServerState = app.state.introllm

    def stop() -> None:
        server.should_exit = True

    state.on_load_failure = stop
    server.run()
    if state.load_failure:
        raise ServeError(state.load_failure)


class ServeError(RuntimeError):
    """The server could not serve (its model failed to load); the message is one line."""
