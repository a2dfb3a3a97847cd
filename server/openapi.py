"""The OpenAPI document (``GET /openapi.json``): the real responses, errors and trace included.

Response bodies are described by the pydantic models below (documentation only: the handlers
build plain dicts, and the schemathesis test checks every response against this document). The
document also states this server's own limits: ``model`` is the one model served, ``max_tokens``
and ``n`` are capped as configured, ``top_logprobs`` and ``logprobs`` as implemented, so that a
client (or a fuzzer) generating from it sends requests this server can run.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from .schemas import INT64_MAX, INT64_MIN, best_of_rule

# ------------------------------------------------------------------------------ response models


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body (OpenAI's error object)."""

    error: ErrorDetail


class TemperatureTrace(BaseModel):
    """One entry per generated token: its id, its text, the temperature used (0 = greedy) and
    whether the policy chose a new temperature there (c_t)."""

    token_ids: list[int]
    tokens: list[str]
    temperatures: list[float]
    updated: list[bool]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None
    temperature_trace: TemperatureTrace


class CompletionResponse(BaseModel):
    """``/v1/completions`` without ``stream`` (a stream sends these as ``text/event-stream`` chunks)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float | None
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length"] | None
    temperature_trace: TemperatureTrace


class ChatCompletionResponse(BaseModel):
    """``/v1/chat/completions`` without ``stream`` (a stream sends ``chat.completion.chunk`` events)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChunk(CompletionResponse):
    """One event of a ``/v1/completions`` stream (its ``data``, as JSON): the same fields as the
    whole response, each choice holding the tokens this event adds."""


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length"] | None
    temperature_trace: TemperatureTrace | None = None


class ChatCompletionChunk(BaseModel):
    """One event of a ``/v1/chat/completions`` stream (its ``data``, as JSON)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    model: str | None = None
    message: str | None = None


_RETRY_AFTER = {"schema": {"type": "string"}, "description": "Seconds to wait before retrying"}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "The request is invalid (the message names the field)",
        401: "Missing or wrong API key (when the server has one)",
        404: "No such model",
        408: "The request body did not arrive within the server's read timeout",
        413: "The request body is larger than the server takes",
        429: "The batch and the waiting queue are full; retry after Retry-After seconds",
        500: "The server failed while generating",
        503: "The model is loading (with Retry-After), or failed to load",
    }
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody, "description": meaning[s]} for s in statuses}
    if 429 in out:
        out[429]["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": True}}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": _RETRY_AFTER}
    return out


def _sse(chunk: type[BaseModel]) -> dict[str, Any]:
    """A stream: each event's ``data`` is a chunk as JSON, the last one ``[DONE]`` (an error in
    mid-stream comes as an ErrorBody event)."""
    json_data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {
            "anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"}, {"$ref": "#/components/schemas/ErrorBody"}]
        },
    }
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}},
        "description": f"Server-sent events: data: <{chunk.__name__} JSON>, then data: [DONE]",
    }
    return {"text/event-stream": {"schema": event}}


HEALTH = {
    200: {"model": Health, "description": "Loaded"},
    503: {"model": Health, "description": "Loading, or failed to load"},
}
METRICS = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text exposition"},
    **_errors(401),
}
MODELS = {200: {"model": ModelList, "description": "The served model"}, **_errors(401, 408, 413, 503)}
COMPLETION = {
    200: {
        "model": CompletionResponse,
        "description": "The completion, or a stream of chunks",
        "content": _sse(CompletionChunk),
    },
    **_errors(400, 401, 404, 408, 413, 429, 500, 503),
}
CHAT_COMPLETION = {
    200: {
        "model": ChatCompletionResponse,
        "description": "The chat completion, or a stream of chunks",
        "content": _sse(ChatCompletionChunk),
    },
    **_errors(400, 401, 404, 408, 413, 429, 500, 503),
}


# ------------------------------------------------------------------------------ the document


def _limit(components: dict[str, Any], name: str, prop: str, **bounds: Any) -> None:
    """Add bounds (or an enum) to one property of a request schema, in whichever of its
    ``anyOf`` branches is not null."""
    field = components.get(name, {}).get("properties", {}).get(prop)
    if field is None:
        return
    for branch in field.get("anyOf", [field]):
        if branch.get("type") != "null":
            branch.update(bounds)


def _add_models(schema: dict[str, Any], *models: type[BaseModel]) -> None:
    """Put models that only the stream events reference into the document's components."""
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in defs.get("$defs", {}).items():
        components.setdefault(name, definition)


def _document_rules(props: dict[str, Any], state) -> None:
    """Rules the request models check in code, written into the document: fields accepted only
    at their neutral value (schemas._NEUTRAL), stop sequences (1-4, none empty), prompts (not
    empty; token ids inside the vocabulary once the model is known)."""
    from .schemas import _NEUTRAL, MAX_STOP_CHARS

    for name, neutral in _NEUTRAL.items():
        if name in props:
            values = [v for v in neutral if v is not None]
            keep = {k: v for k, v in props[name].items() if k in ("title", "default")}
            branches = ([{"enum": values}] if values else []) + [{"type": "null"}]
            props[name] = {
                **keep,
                "anyOf": branches,
                "description": "not supported: accepted only at its neutral value",
            }
    if "stop" in props:
        text = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}
        props["stop"]["anyOf"] = [text, {"type": "array", "items": text, "maxItems": 4}, {"type": "null"}]
    if "prompt" in props:
        token = {"type": "integer", "minimum": 0}
        if state.ready:
            token["maximum"] = state.engine.vocab_size - 1
        ids = {"type": "array", "items": token, "minItems": 1}
        text = {"type": "string", "minLength": 1}
        props["prompt"]["anyOf"] = [
            text,
            {"type": "array", "items": text, "minItems": 1},
            ids,
            {"type": "array", "items": ids, "minItems": 1},
            {"type": "null"},
        ]


def install(app: FastAPI, state) -> None:
    """Serve the OpenAPI document with the limits of this server (see the module docstring).
    The document is rebuilt on each request: ``model`` is known once the model has loaded."""

    def document() -> dict[str, Any]:
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=__doc__.split("\n\n")[0]
        )
        _add_models(schema, CompletionChunk, ChatCompletionChunk)
        for path in schema.get("paths", {}).values():
            for op in path.values():
                op.get("responses", {}).pop("422", None)  # validation errors are 400s here (errors.describe_validation)
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        config = state.config
        for name in ("CompletionRequest", "ChatCompletionRequest"):
            if state.ready:
                _limit(components, name, "model", enum=[state.model_name])
            _limit(components, name, "max_tokens", maximum=config.max_tokens)
            _limit(components, name, "max_completion_tokens", maximum=config.max_tokens)
            _limit(components, name, "n", maximum=config.max_n)
            _limit(components, name, "best_of", minimum=1, maximum=config.max_n)
            # exact integers (pydantic writes int64 bounds as floats, which round up to 2**63)
            _limit(components, name, "seed", minimum=INT64_MIN, maximum=INT64_MAX)
            _limit(components, name, "top_k", minimum=0, maximum=INT64_MAX)
            _document_rules(components.get(name, {}).get("properties", {}), state)
        if "CompletionRequest" in components:
            components["CompletionRequest"].setdefault("allOf", []).append(best_of_rule(config.max_n))
        return schema

    app.openapi = document  # type: ignore[method-assign]
