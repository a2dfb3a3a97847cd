"""Request bodies of the OpenAI-compatible API, as pydantic models.

Fields follow the OpenAI API. As OpenAI does, an argument the server does not know is refused
("Unrecognized request argument supplied: ..."), so a misspelt extension field cannot be silently
ignored. Fields the official SDK can send that do not change generation (``user``, ``metadata``,
...) are accepted and ignored; fields that would change it and that this server does not
implement (tools, penalties, logit_bias, ...) are accepted only at their neutral value.

Extensions (pass them with the SDK's ``extra_body``): ``policy`` — a temperature policy by name
(``learned``, ``fixed:0.7``, ``ead``, ...; see DESIGN.md) —, ``top_k``, and ``ignore_eos`` (keep
generating past end-of-sequence, for fixed-length benchmarks).

Types are strict, as OpenAI's are: a boolean field takes ``true``/``false`` only (not ``0``), an
integer field an integer only (not ``true`` nor ``"2"``), and no number may be NaN or Infinity.
Every integer is bounded by what the engine can take (its tensors are int64): ``seed`` and
``top_k`` here, the rest against the model and the server's limits in prepare.py.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Bounds of ``seed`` and ``top_k``: the engine keeps them in int64 tensors."""
MAX_STOP_CHARS = 1000
"""Longest stop string: each decode step checks every prefix of each one against the text's end."""
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)
VISIBLE = "[^\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
"""A character that is not white space, as JSON Schema's (ECMAScript's) ``\\S`` has it: the
regex the server checks message contents with, and the ``pattern`` the document gives them."""
SEED_PROMISE = (
    "Same seed, same random numbers, whatever else the server is decoding. The model's hidden states "
    "round differently with the shape of the batch they are computed in: with float32 weights that moves "
    "a temperature in its 7th digit and the tokens are the same; with bfloat16 (the default where the CPU "
    "or GPU has it) the policy takes the same decisions given the same hidden state, but after a near-tie "
    "the tokens can differ from those of the same request decoded beside others. On the vLLM backend the "
    "seed fixes the temperature decisions only."
)
"""What ``seed`` promises (the OpenAPI description of the field; README, "The HTTP API")."""

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
    model_config = ConfigDict(extra="forbid", **_STRICT)
    _keep_null: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _drop_nulls(data, cls._keep_null)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None  # sent by some vLLM-era clients; ignored


# Rules across fields, as JSON Schema (the document states what the validators below check).
_TEMPERATURE_OR_POLICY = {
    "not": {
        "required": ["temperature", "policy"],
        "properties": {"temperature": {"type": "number"}, "policy": {"type": "string"}},
    }
}
_TOP_LOGPROBS_NEED_LOGPROBS = {
    "anyOf": [
        {"not": {"required": ["top_logprobs"]}},
        {"properties": {"top_logprobs": {"enum": [None, 0]}}},
        {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
    ]
}


class _Common(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1)  # null: the default (see _drop_nulls); never None once validated
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX, description=SEED_PROMISE)
    # extensions
    policy: str | None = Field(
        None,
        description="a temperature policy by name, with its arguments after a colon (fixed:0.7, "
        "ead:gamma=0.99): learned, greedy, fixed, always-update, prompt-level, shifted, ead, ead-exp, tampo; "
        "an unknown name or a bad argument is refused with a 400 naming the valid policies",
    )
    top_k: int | None = Field(None, ge=0, le=INT64_MAX)
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
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence may have at most {MAX_STOP_CHARS} characters")
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


def best_of_rule(max_n: int) -> dict[str, Any]:  # one of CompletionRequest's allOf (openapi.install)
    """JSON Schema of CompletionRequest's best_of rule: absent, null, or equal to n (whose default is 1)."""
    one = {"best_of": {"const": 1}}
    return {
        "anyOf": [
            {"not": {"required": ["best_of"]}},
            {"properties": {"best_of": {"type": "null"}}},
            {"properties": one, "not": {"required": ["n"]}},
            {"properties": {**one, "n": {"type": "null"}}},
            *(
                {"required": ["n"], "properties": {"n": {"const": k}, "best_of": {"const": k}}}
                for k in range(1, max_n + 1)
            ),
        ]
    }


class CompletionRequest(_Common):
    model_config = ConfigDict(json_schema_extra={"allOf": [_TEMPERATURE_OR_POLICY]})
    _keep_null: ClassVar[frozenset[str]] = frozenset({"prompt"})
    prompt: str | list[str] | list[int] | list[list[int]] | None
    """Required; null: the start of a new document (OpenAI's ``<|endoftext|>`` default)."""
    max_tokens: int | None = Field(None, ge=1)  # default: OpenAI's 16, within the server's cap (prepare)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    best_of: int | None = Field(
        None,
        ge=1,
        description="accepted only equal to n (this server returns every sample it draws; it does not rank "
        "best_of candidates)",
    )
    suffix: str | None = None

    @model_validator(mode="after")
    def _best_of(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError(f"best_of must equal n ({self.n}): this server does not rank best_of candidates")
        return self


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


# JSON Schema of ChatMessage's rule below: content present (not null) unless the role is assistant.
_CONTENT_RULE = {
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"properties": {"role": {"const": "assistant"}}},
    ]
}


class ChatMessage(BaseModel):
    """One message. As in OpenAI's types, only an assistant message may come without ``content``."""

    # extra="ignore": e.g. "refusal": null, echoed back by some clients
    model_config = ConfigDict(extra="ignore", json_schema_extra=_CONTENT_RULE, **_STRICT)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _drop_nulls(data)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content(self):
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content (only an assistant message may omit it)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


# JSON Schema of the rule plan_chat checks: some message has content that is not only white space.
_SOME_CONTENT = {
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"type": "string", "pattern": VISIBLE}}},
        {
            "required": ["content"],
            "properties": {"content": {"type": "array", "contains": {"properties": {"text": {"pattern": VISIBLE}}}}},
        },
    ]
}


class ChatCompletionRequest(_Common):
    model_config = ConfigDict(json_schema_extra={"allOf": [_TEMPERATURE_OR_POLICY, _TOP_LOGPROBS_NEED_LOGPROBS]})
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="at least one message must have content other than white space",
        json_schema_extra={"contains": _SOME_CONTENT},
    )
    max_completion_tokens: int | None = Field(
        None, ge=1, description="the same as max_tokens; when both are given they must be equal"
    )
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
