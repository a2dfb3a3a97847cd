"""The HTTP server: OpenAI-compatible completions with per-token temperature traces.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health`` (503 until the model is loaded), ``GET /metrics`` (Prometheus text).

Temperature semantics (DESIGN.md): ``temperature`` omitted -> the learned policy; a number -> that
fixed temperature, 0 -> greedy; the ``policy`` extension field picks any policy by name. Each
choice carries ``temperature_trace`` = {token_ids, tokens, temperatures, updated}, one entry per
generated token; in a stream, each chunk carries the entries of the tokens it adds.

Every error is an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}`` with a 4xx
status that names the problem (5xx only for failures of the server itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from introllm.sampler import Engine, SamplingParams

from .config import ServerConfig
from .errors import APIError, describe_validation, error_body
from .metrics import Metrics
from .middleware import Auth, RequestLog
from .responses import ChoiceState, chat_logprobs, completion_logprobs, trace, usage
from .scheduler import Done, Failed, QueueFull, Request as GenRequest, Scheduler, TokenEvent
from .schemas import ChatCompletionRequest, CompletionRequest
from .ui import add_ui

log = logging.getLogger("introllm.server")

class ServerState:
    """The loaded model and the decode loop; ``ready`` once both exist."""

    def __init__(self, config: ServerConfig, metrics: Metrics, checkpoint=None, loader=None):
        self.config = config
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.loader = loader
        self.ready = False
        self.load_error: str | None = None
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.tokenizer = None
        self.model_name = config.model_name or "introllm"
        self.created = int(time.time())

    def load(self) -> None:
        try:
            if self.config.backend == "vllm":
                self.engine, tokenizer, path = _load_vllm(self.config)
            else:
                ck = self.checkpoint or (self.loader() if self.loader else None)
                if ck is None:
                    from introllm.sampler.models import load_model

                    log.info("loading %s", self.config.checkpoint or "the embedded default model")
                    ck = load_model(self.config.checkpoint, self.config.device, self.config.dtype, self.config.trust_remote_code)
                self.engine, tokenizer, path = Engine(ck.model, ck.head), ck.tokenizer, ck.path
            if tokenizer is None:
                raise ValueError(f"{path} has no tokenizer files; the server needs them")
            self.model_name = self.config.model_name or path.name
            self.tokenizer = tokenizer
            self.scheduler = Scheduler(
                self.engine, tokenizer, max_batch=self.config.max_batch, max_queue=self.config.max_queue, metrics=self.metrics
            )
            self.scheduler.start()
            self.ready = True
            log.info(
                "serving %s on the %s backend (%s)",
                self.model_name,
                self.config.backend,
                "learned temperature head" if self.engine.head is not None else "no head: fixed temperatures only",
            )
        except Exception as e:  # reported by /health and by every request
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("could not load the model")

    def shutdown(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()


def _load_vllm(config: ServerConfig):
    """The vLLM engine and the tokenizer for ``config`` (the embedded model when no checkpoint)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from introllm.sampler.models import default_checkpoint
    from introllm.sampler.vllm_engine import VLLMEngine

    path = Path(config.checkpoint) if config.checkpoint else default_checkpoint()
    log.info("loading %s into vLLM%s", path, " (eager)" if config.vllm_eager else " (compiling the model: minutes on a CPU)")
    engine = VLLMEngine(
        path,
        dtype=config.dtype,
        max_batch=config.max_batch,
        eager=config.vllm_eager,
        kv_cache_gib=config.kv_cache_gib,
        trust_remote_code=config.trust_remote_code,
        engine_args=config.vllm_args,
    )
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    return engine, tokenizer, path


def create_app(config: ServerConfig, checkpoint=None, loader=None) -> FastAPI:
    """The ASGI app. ``checkpoint`` (a loaded sampler.checkpoint.Checkpoint) skips loading;
    ``loader`` (a function returning one) replaces the default loading from ``config``."""
    metrics = Metrics()
    state = ServerState(config, metrics, checkpoint, loader)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, name="introllm-load", daemon=True).start()
        yield
        state.shutdown()

    app = FastAPI(title="IntroLLM", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.introllm = state

    # ------------------------------------------------------------------ errors

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(*describe_validation(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse(error_body(message.get(exc.status_code, str(exc.detail)), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    if config.api_key:
        app.add_middleware(Auth, api_key=config.api_key)
    app.add_middleware(RequestLog, metrics=metrics)  # outermost: logs and counts the 401s too

    # ------------------------------------------------------------------ helpers

    def ready_state() -> ServerState:
        if state.load_error:
            raise APIError(503, f"the model failed to load: {state.load_error}", type="server_error")
        if not state.ready:
            raise APIError(503, "the model is still loading; retry shortly", type="server_error")
        return state

    def check_model(name: str) -> None:
        if name != state.model_name:
            raise APIError(404, f"the model '{name}' does not exist; this server serves '{state.model_name}'", param="model", code="model_not_found")

    # ------------------------------------------------------------------ routes

    @app.get("/health")
    async def health():
        if state.load_error:
            return JSONResponse({"status": "error", "message": state.load_error}, status_code=503)
        if not state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "model": state.model_name}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        s = ready_state()
        return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": s.created, "owned_by": "introllm"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        s = ready_state()
        check_model(body.model)
        prompts = _completion_prompts(body.prompt, s)
        logprobs = body.logprobs
        params = _sampling_params(body, s, prompts, body.max_tokens, num_top=logprobs or 0)
        return await _serve(request, s, body, prompts, params, kind="text_completion", logprobs=logprobs is not None)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        s = ready_state()
        check_model(body.model)
        if not any(m.text().strip() for m in body.messages):
            raise APIError(400, "messages are empty: give at least one message with content", param="messages")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        from introllm.sampler.text import chat_ids

        try:
            prompts = [chat_ids(s.tokenizer, messages)]
        except Exception as e:  # a template that rejects this conversation (e.g. role order)
            raise APIError(400, f"the chat template rejected these messages: {e}", param="messages") from None
        params = _sampling_params(body, s, prompts, body.requested_max_tokens(), num_top=(body.top_logprobs or 0) if body.logprobs else 0)
        return await _serve(request, s, body, prompts, params, kind="chat.completion", logprobs=bool(body.logprobs))

    # ------------------------------------------------------------------ generation

    def _completion_prompts(prompt, s: ServerState) -> list[list[int]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        if not prompt:
            raise APIError(400, "prompt is empty", param="prompt")
        if all(isinstance(p, int) for p in prompt):
            prompt = [prompt]
        ids = []
        for p in prompt:
            if isinstance(p, str):
                if not p:
                    raise APIError(400, "prompt is empty", param="prompt")
                ids.append(list(s.tokenizer(p)["input_ids"]))
            else:
                if not p:
                    raise APIError(400, "prompt is empty (no token ids)", param="prompt")
                if min(p) < 0 or max(p) >= s.engine.vocab_size:
                    raise APIError(400, f"prompt has token ids outside the vocabulary [0, {s.engine.vocab_size})", param="prompt")
                ids.append(list(p))
        return ids

    def _sampling_params(body, s: ServerState, prompts: list[list[int]], max_tokens: int | None, num_top: int) -> SamplingParams:
        context = s.engine.max_context
        longest = max(len(p) for p in prompts)
        if longest >= context:
            raise APIError(400, f"the prompt has {longest} tokens; this model's context is {context} tokens", param="prompt", code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(config.default_max_tokens, context - longest)
        if max_tokens > config.max_tokens:
            raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {config.max_tokens}", param="max_tokens")
        if longest + max_tokens > context:
            raise APIError(
                400,
                f"this model's context is {context} tokens, and {longest + max_tokens} were requested "
                f"({longest} in the prompt, {max_tokens} to generate)",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if body.n > config.max_n:
            raise APIError(400, f"n is {body.n}; this server allows at most {config.max_n}", param="n")
        if body.n * len(prompts) > config.max_batch:
            raise APIError(400, f"{len(prompts)} prompts x n={body.n} exceeds the batch size {config.max_batch}", param="n")
        spec = body.policy_spec()
        try:
            s.engine.policy(spec)
        except ValueError as e:
            raise APIError(400, str(e), param="policy" if body.policy is not None else "temperature") from None
        return SamplingParams(
            max_new_tokens=max_tokens,
            policy=spec,
            seed=None if body.seed is None else body.seed % (1 << 64),
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            logprobs=num_top,
            ignore_eos=body.ignore_eos,
        )

    async def _serve(request: Request, s: ServerState, body, prompts, params: SamplingParams, *, kind: str, logprobs: bool):
        rid = request.scope["state"]["request_id"]
        gen = GenRequest(request_id=rid, prompts=prompts, params=params, n=body.n, stop=body.stop or [])
        try:
            s.scheduler.submit(gen)
        except QueueFull:
            raise APIError(429, f"the server is busy: {config.max_queue} requests are already waiting; retry later", type="rate_limit_error", code="queue_full") from None
        request.scope["state"]["usage"] = (sum(map(len, prompts)), 0)
        metrics.prompt_tokens.inc(sum(map(len, prompts)))
        decode = lambda t: s.tokenizer.decode([t])  # noqa: E731
        if body.stream:
            return StreamingResponse(
                _stream(request, s, body, gen, kind, logprobs, decode),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        choices = [ChoiceState(i) for i in range(gen.num_rows)]
        done = None
        try:
            while done is None:
                try:
                    item = await asyncio.wait_for(gen.events.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        s.scheduler.cancel(gen)
                        return Response(status_code=499)
                    continue
                if isinstance(item, Failed):
                    raise APIError(500, item.message, type="server_error")
                if isinstance(item, Done):
                    done = item
                else:
                    for e in item:
                        choices[e.index].add(e)
        except BaseException:
            s.scheduler.cancel(gen)
            raise
        request.scope["state"]["usage"] = (done.prompt_tokens, done.completion_tokens)
        return {
            "id": ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + rid,
            "object": kind,
            "created": int(time.time()),
            "model": s.model_name,
            "choices": [_choice(c, kind, logprobs, decode) for c in choices],
            "usage": usage(done.prompt_tokens, done.completion_tokens),
        }

    def _choice(c: ChoiceState, kind: str, logprobs: bool, decode) -> dict[str, Any]:
        if kind == "chat.completion":
            return {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c, decode) if logprobs else None,
                "finish_reason": c.finish_reason,
                "temperature_trace": trace(c),
            }
        return {
            "index": c.index,
            "text": c.text,
            "logprobs": completion_logprobs(c, decode) if logprobs else None,
            "finish_reason": c.finish_reason,
            "temperature_trace": trace(c),
        }

    async def _stream(request: Request, s: ServerState, body, gen: GenRequest, kind: str, logprobs: bool, decode) -> AsyncIterator[bytes]:
        chat = kind == "chat.completion"
        rid = ("chatcmpl-" if chat else "cmpl-") + gen.request_id
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        offsets = [0] * gen.num_rows

        def chunk(choices: list[dict], **extra) -> bytes:
            payload = {"id": rid, "object": obj, "created": created, "model": s.model_name, "choices": choices, **extra}
            return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

        finished = False
        try:
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None} for i in range(gen.num_rows)])
            while True:
                items = [await gen.events.get()]
                while not gen.events.empty():  # a slow reader gets several steps in one chunk
                    items.append(gen.events.get_nowait())
                by_choice: dict[int, list[TokenEvent]] = {}
                done = None
                for item in items:
                    if isinstance(item, Failed):
                        yield b"data: " + json.dumps(error_body(item.message, "server_error")).encode() + b"\n\n"
                        finished = True
                        return
                    if isinstance(item, Done):
                        done = item
                    else:
                        for e in item:
                            by_choice.setdefault(e.index, []).append(e)
                out = []
                for index, events in sorted(by_choice.items()):
                    text = "".join(e.text for e in events)
                    finish = next((e.finish_reason for e in events if e.finish_reason), None)
                    c: dict[str, Any] = {"index": index}
                    if chat:
                        c["delta"] = {"content": text} if text or not finish else {}
                        c["logprobs"] = chat_logprobs(events, decode) if logprobs else None
                    else:
                        c["text"] = text
                        c["logprobs"] = completion_logprobs(events, decode, offsets[index]) if logprobs else None
                        offsets[index] += sum(len(e.piece) for e in events)
                    c["finish_reason"] = finish
                    c["temperature_trace"] = trace(events)
                    out.append(c)
                if out:
                    yield chunk(out)
                if done is not None:
                    request.scope["state"]["usage"] = (done.prompt_tokens, done.completion_tokens)
                    if body.include_usage():
                        yield chunk([], usage=usage(done.prompt_tokens, done.completion_tokens))
                    yield b"data: [DONE]\n\n"
                    finished = True
                    return
        finally:
            if not finished:  # the client went away (or the server is shutting down)
                s.scheduler.cancel(gen)
                request.scope["state"]["outcome"] = 499

    add_ui(app, config)  # the playground page at / (server/ui.py); off with --no-ui
    return app


def serve(config: ServerConfig) -> None:
    """Run the server until interrupted (``introllm serve``)."""
    import uvicorn

    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this port can use the model", config.host)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info", access_log=False)
