"""A request body, checked once at the edge, becomes a ``Plan``: prompt ids plus SamplingParams.

Everything the model and the server's limits decide is checked here (prompt ids inside the
vocabulary, the context length, max_tokens, n, the policy name), each failure an ``APIError``
with a 4xx status naming the field. Behind this point the scheduler and the engine receive only
requests that can be decoded; a failure there is a server error.

Cheap checks come before tokenizing: text that is not Unicode (a lone UTF-16 surrogate such as
JSON's ``"\\ud800"``), more prompts than the batch holds, and a prompt with more characters than
the context can hold as tokens (``max_prompt_chars``). Planning tokenizes, so the handlers run it
in a worker thread, off the event loop.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from introllm.sampler import SamplingParams
from introllm.sampler.text import chat_ids

from .config import ServerConfig
from .errors import APIError
from .responses import CHAT, TEXT
from .schemas import VISIBLE, ChatCompletionRequest, CompletionRequest

COMPLETION_MAX_TOKENS = 16
"""max_tokens of a completion that gives none (OpenAI's default for /v1/completions)."""


@dataclass(frozen=True)
class Plan:
    """A validated request, ready for the scheduler."""

    kind: str
    """"text_completion" or "chat.completion" (the response's ``object``)."""
    prompts: list[list[int]]
    """Token ids of each prompt (one for chat; one or more for completions)."""
    params: SamplingParams
    n: int
    """Samples per prompt."""
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    """Streaming: end with a usage chunk (``stream_options.include_usage``)."""
    logprobs: bool = False
    """Return the ``logprobs`` object."""

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def find_non_text(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string in ``value`` (a request model, or what it holds) that is
    not Unicode text: one holding a lone UTF-16 surrogate, which cannot be encoded (a tokenizer
    raises a TypeError on it). None when every string is text.

    >>> find_non_text({"messages": [{"content": "ok"}, {"content": "Hi \\ud800"}]})
    'messages.1.content'
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or None
        return None
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in value.model_fields_set}
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()] + [(str(k), k) for k in value]
    elif isinstance(value, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return None
    for key, item in items:
        found = find_non_text(item, f"{path}.{key}" if path else key)
        if found:
            return found
    return None


def check_text(body: BaseModel) -> None:
    """400 naming the field when a string of the request is not Unicode text (``find_non_text``)."""
    where = find_non_text(body)
    if where is not None:
        raise APIError(
            400,
            f"{where} is not valid Unicode text: it holds a lone UTF-16 surrogate (such as \\ud800), "
            "which encodes no character",
            param=where,
        )


@functools.lru_cache(maxsize=8)
def _longest_token_chars(tokenizer) -> int:
    return max((len(piece) for piece in tokenizer.get_vocab()), default=1)


def max_prompt_chars(tokenizer, context: int) -> int:
    """Characters beyond which a text cannot fit ``context`` tokens: no token covers more characters
    than the longest entry of the vocabulary (a byte-level entry has one character per byte), so a
    longer text is refused without tokenizing it."""
    return context * max(1, _longest_token_chars(tokenizer))


def _check_chars(chars: int, tokenizer, engine, param: str) -> None:
    bound = max_prompt_chars(tokenizer, engine.max_context)
    if chars > bound:
        raise APIError(
            400,
            f"the prompt has {chars} characters, more than this model's context of {engine.max_context} tokens "
            f"can hold (at most {bound} characters)",
            param=param,
            code="context_length_exceeded",
        )


def plan_completion(body: CompletionRequest, tokenizer, engine, config: ServerConfig) -> Plan:
    """``/v1/completions``: raw prompts are tokenized as the tokenizer does by default, so
    special-token text in them becomes control tokens (README, "The HTTP API")."""
    check_text(body)
    prompts = _completion_prompts(body.prompt, tokenizer, engine, config.max_batch)
    params = _sampling_params(
        body, prompts, body.max_tokens, body.logprobs or 0, engine, config, default_max_tokens=COMPLETION_MAX_TOKENS
    )
    return Plan(
        TEXT, prompts, params, body.n, body.stop or [], body.stream, body.include_usage(), body.logprobs is not None
    )


def plan_chat(body: ChatCompletionRequest, tokenizer, engine, config: ServerConfig) -> Plan:
    """``/v1/chat/completions``: the messages through the chat template, their contents as plain
    text (sampler.text.chat_ids)."""
    check_text(body)
    if not any(re.search(VISIBLE, m.text()) for m in body.messages):
        raise APIError(
            400, "messages are empty: give at least one message with content other than white space", param="messages"
        )
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    _check_chars(sum(len(m["content"]) for m in messages), tokenizer, engine, "messages")
    try:
        prompts = [chat_ids(tokenizer, messages)]
    except Exception as e:  # a template that rejects this conversation (e.g. role order)
        raise APIError(400, f"the chat template rejected these messages: {e}", param="messages") from None
    num_top = (body.top_logprobs or 0) if body.logprobs else 0
    params = _sampling_params(
        body,
        prompts,
        body.requested_max_tokens(),
        num_top,
        engine,
        config,
        default_max_tokens=config.default_max_tokens,
    )
    return Plan(CHAT, prompts, params, body.n, body.stop or [], body.stream, body.include_usage(), bool(body.logprobs))


def _document_start(tokenizer) -> list[int]:
    """The prompt of a request without one: OpenAI documents ``<|endoftext|>`` (the document
    separator), so the tokenizer's own when it has that token, else its BOS, else its EOS."""
    separator = tokenizer.get_vocab().get("<|endoftext|>")
    for candidate in (separator, tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return [int(candidate)]
    raise APIError(400, "missing required field: prompt (this model has no document-start token)", param="prompt")


def _completion_prompts(prompt, tokenizer, engine, max_batch: int) -> list[list[int]]:
    vocab_size = engine.vocab_size
    if prompt is None:
        return [_document_start(tokenizer)]
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    if len(prompt) > max_batch:  # before tokenizing any of them
        raise APIError(400, f"{len(prompt)} prompts exceed the batch size {max_batch}", param="prompt")
    for p in prompt:
        if isinstance(p, str):
            _check_chars(len(p), tokenizer, engine, "prompt")
    ids = []
    for p in prompt:
        if isinstance(p, str):
            if not p:
                raise APIError(400, "prompt is empty", param="prompt")
            ids.append(list(tokenizer(p)["input_ids"]))
            if not ids[-1]:
                raise APIError(400, "prompt has no tokens", param="prompt")
        else:
            if not p:
                raise APIError(400, "prompt is empty (no token ids)", param="prompt")
            if min(p) < 0 or max(p) >= vocab_size:
                raise APIError(400, f"prompt has token ids outside the vocabulary [0, {vocab_size})", param="prompt")
            ids.append(list(p))
    return ids


def _sampling_params(
    body,
    prompts: list[list[int]],
    max_tokens: int | None,
    num_top: int,
    engine,
    config: ServerConfig,
    *,
    default_max_tokens: int,
) -> SamplingParams:
    context = engine.max_context
    longest = max(len(p) for p in prompts)
    if longest >= context:
        raise APIError(
            400,
            f"the prompt has {longest} tokens; this model's context is {context} tokens",
            param="prompt",
            code="context_length_exceeded",
        )
    if max_tokens is None:  # the default never exceeds the server's cap nor the room left in the context
        max_tokens = min(default_max_tokens, config.max_tokens, context - longest)
    if max_tokens > config.max_tokens:
        raise APIError(
            400, f"max_tokens is {max_tokens}; this server allows at most {config.max_tokens}", param="max_tokens"
        )
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
        engine.policy(spec)
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
