"""The route handlers, module-level so that a test can call each by name.

Each handler finds the server's ``ServerState`` on ``request.app.state.introllm``; ``create_app``
(app.py) registers them. A generation request goes: body (pydantic, schemas) -> ``Plan``
(prepare: every check against the model and the limits) -> scheduler -> ``Token`` records ->
response builders (responses).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .errors import APIError, error_body
from .prepare import Plan, plan_chat, plan_completion
from .records import Done, Failed, Token
from .responses import CHAT, choice, chunk_choice, first_chat_chunk_choice, usage
from .scheduler import QueueFull
from .scheduler import Request as GenRequest
from .schemas import ChatCompletionRequest, CompletionRequest
from .state import ServerState

_GONE = object()  # put on a request's event queue when its client disconnects

RETRY_AFTER_SECONDS = 1
"""Retry-After of a 429 (full queue) or a 503 (loading): a decode step frees room within a second."""


def server_state(request: Request) -> ServerState:
    return request.app.state.introllm


def ready_state(request: Request) -> ServerState:
    """The state, or a 503 while the model loads or after it failed to load."""
    s = server_state(request)
    if s.load_error:
        raise APIError(503, f"the model failed to load: {s.load_error}", type="server_error")
    if not s.ready:
        raise APIError(
            503,
            "the model is still loading; retry shortly",
            type="server_error",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return s


def check_model(s: ServerState, name: str) -> None:
    if name != s.model_name:
        raise APIError(
            404,
            f"the model '{name}' does not exist; this server serves '{s.model_name}'",
            param="model",
            code="model_not_found",
        )


# ---------------------------------------------------------------------------------------- routes


async def health(request: Request):
    """``GET /health``: 200 {"status": "ok", "model"} once loaded; 503 while loading or after a failure."""
    s = server_state(request)
    if s.load_error:
        return JSONResponse({"status": "error", "message": s.load_error}, status_code=503)
    if not s.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ok", "model": s.model_name}


async def prometheus(request: Request):
    """``GET /metrics``: Prometheus text exposition."""
    return Response(server_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def models(request: Request):
    """``GET /v1/models``: the one model this server serves."""
    s = ready_state(request)
    return {
        "object": "list",
        "data": [{"id": s.model_name, "object": "model", "created": s.created, "owned_by": "introllm"}],
    }


async def completions(body: CompletionRequest, request: Request):
    """``POST /v1/completions``."""
    s = ready_state(request)
    check_model(s, body.model)
    plan = await run_in_threadpool(plan_completion, body, s.tokenizer, s.engine, s.config)  # tokenizes
    return await generate(request, s, plan)


async def chat_completions(body: ChatCompletionRequest, request: Request):
    """``POST /v1/chat/completions``."""
    s = ready_state(request)
    check_model(s, body.model)
    plan = await run_in_threadpool(plan_chat, body, s.tokenizer, s.engine, s.config)  # tokenizes
    return await generate(request, s, plan)


# ------------------------------------------------------------------------------------ generation


async def generate(request: Request, s: ServerState, plan: Plan):
    """Submit ``plan`` and answer with the whole response, or with a stream of chunks."""
    rid = request.scope["state"]["request_id"]
    gen = GenRequest(request_id=rid, plan=plan)
    try:
        s.scheduler.submit(gen)
    except QueueFull:
        raise APIError(
            429,
            f"the server is busy: {s.config.max_queue} requests are already waiting; retry later",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    request.scope["state"]["usage"] = (plan.prompt_tokens, 0)
    s.metrics.prompt_tokens.inc(plan.prompt_tokens)
    if plan.stream:
        return StreamingResponse(
            stream(request, s, plan, gen),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await respond(request, s, plan, gen)


async def _wait_for_disconnect(request: Request, gen: GenRequest) -> None:
    """Wait for the ASGI ``http.disconnect`` message (the body is read already, so the next message
    is that one), then wake the handler: its sequences leave the batch at the next step."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    gen.events.put_nowait(_GONE)


async def respond(request: Request, s: ServerState, plan: Plan, gen: GenRequest):
    """The non-streaming response; a client that disconnects frees its slots at the next step."""
    tokens: list[list[Token]] = [[] for _ in range(gen.num_rows)]
    watcher = asyncio.create_task(_wait_for_disconnect(request, gen))
    done = None
    try:
        while done is None:
            item = await gen.events.get()
            if item is _GONE:
                s.scheduler.cancel(gen)
                request.scope["state"]["outcome"] = 499
                return Response(status_code=499)
            if isinstance(item, Failed):
                raise APIError(500, item.message, type="server_error")
            if isinstance(item, Done):
                done = item
            else:
                for t in item:
                    tokens[t.index].append(t)
    except BaseException:
        s.scheduler.cancel(gen)
        raise
    finally:
        watcher.cancel()
    request.scope["state"]["usage"] = (done.prompt_tokens, done.completion_tokens)
    return {
        "id": _response_id(plan, gen),
        "object": plan.kind,
        "created": int(time.time()),
        "model": s.model_name,
        "choices": [choice(plan.kind, i, ts, plan.logprobs) for i, ts in enumerate(tokens)],
        "usage": usage(done.prompt_tokens, done.completion_tokens),
    }


def _response_id(plan: Plan, gen: GenRequest) -> str:
    return ("chatcmpl-" if plan.kind == CHAT else "cmpl-") + gen.request_id


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def stream(request: Request, s: ServerState, plan: Plan, gen: GenRequest) -> AsyncIterator[bytes]:
    """Server-sent events: one chunk per decode step (or several steps for a slow reader), then,
    when ``stream_options.include_usage`` is true, a ``choices: []`` chunk with the usage (the other
    chunks then carry ``"usage": null``, as OpenAI's do), then ``data: [DONE]``."""
    chat = plan.kind == CHAT
    created = int(time.time())
    head: dict[str, Any] = {
        "id": _response_id(plan, gen),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": s.model_name,
    }

    def chunk(choices: list[dict], **extra) -> bytes:
        if plan.include_usage:
            extra.setdefault("usage", None)
        return _sse({**head, "choices": choices, **extra})

    finished = False
    try:
        if chat:
            yield chunk([first_chat_chunk_choice(i) for i in range(gen.num_rows)])
        while True:
            items = [await gen.events.get()]
            while not gen.events.empty():  # a slow reader gets several steps in one chunk
                items.append(gen.events.get_nowait())
            by_choice: dict[int, list[Token]] = {}
            done = None
            for item in items:
                if isinstance(item, Failed):
                    yield _sse(error_body(item.message, "server_error"))
                    finished = True
                    return
                if isinstance(item, Done):
                    done = item
                elif item is not _GONE:
                    for t in item:
                        by_choice.setdefault(t.index, []).append(t)
            out = [chunk_choice(plan.kind, i, ts, plan.logprobs) for i, ts in sorted(by_choice.items())]
            if out:
                yield chunk(out)
            if done is not None:
                request.scope["state"]["usage"] = (done.prompt_tokens, done.completion_tokens)
                if plan.include_usage:
                    yield chunk([], usage=usage(done.prompt_tokens, done.completion_tokens))
                yield b"data: [DONE]\n\n"
                finished = True
                return
    finally:
        if not finished:  # the client went away (or the server is shutting down)
            s.scheduler.cancel(gen)
            request.scope["state"]["outcome"] = 499
