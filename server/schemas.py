"""Request bodies of the OpenAI-compatible API, as pydantic models.

Fields follow the OpenAI API. As OpenAI does, an argument the server does not know is refused
("Unrecognized request argument supplied: ..."), so a misspelt extension field cannot be silently
ignored. Fields the official SDK can send that do not change generation (``user``, ``metadata``,
...) are accepted and ignored; fields that would change it and that this server does not
implement (tools, penalties, logit_bias, ...) are accepted only at their neutral value.

Extensions (pass them with the SDK's ``extra_body``): ``policy`` — a temperature policy by name
(``learned``, ``fixed:0.7``, ``ead``, ...; see DESIGN.md) —, ``top_k``, and ``ignore_eos`` (keep
generating past end-of-sequence, for fixed-length benchmarks).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Fields that change generation and are not implemented: allowed only when absent or neutral.
_NEUTRAL: dict[str, tuple] = {
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
    "echo": (None, False),
    "suffix": (None, ""),
}


def _drop_nulls(data: Any, keep: frozenset[str] = frozenset()) -> Any:
    """OpenAI's request types mark most fields nullable, and the SDK sends ``null`` to mean "the
    default": a null field is treated as absent, so its default applies (a required field stays
    required: ``"model": null`` is "missing required field"). Fields in ``keep`` are required
    *and* nullable in OpenAI's types (``prompt``): there null is a value of its own."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if v is not None or k in keep}
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _keep_null: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _drop_nulls(data, cls._keep_null)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None  # sent by some vLLM-era clients; ignored


class _Common(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1)  # null: the default (see _drop_nulls); never None once validated
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    # extensions
    policy: str | None = None
    top_k: int | None = Field(None, ge=0)
    ignore_eos: bool | None = False
    # accepted, no effect on generation
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    parallel_tool_calls: bool | None = None
    # not implemented: neutral values only (see _NEUTRAL)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @model_validator(mode="after")
    def _neutral(self):
        for name, neutral in _NEUTRAL.items():
            if name in self.model_fields_set and getattr(self, name, None) not in neutral:
                raise ValueError(f"{name} is not supported by this server")
        if self.policy is not None and self.temperature is not None:
            raise ValueError(
                "give either temperature (a fixed temperature) or policy (a temperature policy by name), not both"
            )
        return self

    def policy_spec(self) -> str:
        """temperature omitted: the learned policy (or the ``policy`` field); a number: fixed, 0 = greedy."""
        if self.policy is not None:
            return self.policy
        if self.temperature is None:
            return "learned"
        return "greedy" if self.temperature == 0 else f"fixed:{self.temperature!r}"

    def include_usage(self) -> bool:
        """A stream ends with a usage chunk only when asked (``stream_options.include_usage: true``)."""
        return bool(self.stream and self.stream_options is not None and self.stream_options.include_usage)


class CompletionRequest(_Common):
    _keep_null: ClassVar[frozenset[str]] = frozenset({"prompt"})
    prompt: str | list[str] | list[int] | list[list[int]] | None
    """Required; null: the start of a new document (OpenAI's ``<|endoftext|>`` default)."""
    max_tokens: int | None = Field(None, ge=1)  # default: OpenAI's 16, within the server's cap (prepare)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _best_of(self):
        if self.best_of not in (None, self.n, 1) or (self.best_of == 1 and self.n != 1):
            raise ValueError("best_of is not supported by this server")
        return self


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. "refusal": null, echoed back by some clients

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _drop_nulls(data)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    moderation: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None

    @model_validator(mode="after")
    def _tokens(self):
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise ValueError("max_tokens and max_completion_tokens disagree; give one")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
