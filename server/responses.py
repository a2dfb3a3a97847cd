"""OpenAI-shaped response bodies and stream chunks, with the ``temperature_trace`` extension.

Every builder reads a list of ``records.Token`` (a whole choice, or the tokens one stream chunk
adds), so the non-streaming body and the chunks of a stream are made by the same functions.
Shapes follow the OpenAI API reference ("The completion object", "The chat completion object",
"The chat completion chunk object").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .records import Token, TokenLogprob

CHAT, TEXT = "chat.completion", "text_completion"


def trace(tokens: Sequence[Token]) -> dict[str, list]:
    """The ``temperature_trace`` object: one entry per generated token (DESIGN.md, HTTP contract)."""
    return {
        "token_ids": [t.token_id for t in tokens],
        "tokens": [t.piece for t in tokens],
        "temperatures": [t.tau for t in tokens],
        "updated": [t.updated for t in tokens],
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _top_dict(t: Token) -> dict[str, float]:
    """Legacy completions top_logprobs: {token name: logprob}, the alternatives best first plus the
    sampled token when it is not among them (OpenAI: "up to logprobs+1 elements"). Names are
    distinct per token (tokens.token_name); should two ids still share a name (a SentencePiece
    vocabulary with both ``A`` and ``<0x41>``), the later one is keyed ``name<id>`` rather than
    replacing the first."""
    out: dict[str, float] = {}
    seen: set[int] = set()
    for alt in (*(t.top or ()), t.sampled):
        if alt.token_id in seen:
            continue
        seen.add(alt.token_id)
        key = alt.token if alt.token not in out else f"{alt.token}<{alt.token_id}>"
        out[key] = alt.logprob
    return out


def completion_logprobs(tokens: Sequence[Token]) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object: tokens, token_logprobs, top_logprobs, text_offset."""
    return {
        "tokens": [t.sampled.token for t in tokens],
        "token_logprobs": [t.sampled.logprob for t in tokens],
        "top_logprobs": [_top_dict(t) for t in tokens] if any(t.top is not None for t in tokens) else None,
        "text_offset": [t.text_offset for t in tokens],
    }


def _entry(lp: TokenLogprob) -> dict[str, Any]:
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.raw)}


def chat_logprobs(tokens: Sequence[Token]) -> dict[str, Any]:
    """The chat ``logprobs`` object: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}.
    ``bytes`` are each token's own bytes, so the entries of a choice concatenate to its text's bytes."""
    return {
        "content": [{**_entry(t.sampled), "top_logprobs": [_entry(a) for a in (t.top or ())]} for t in tokens],
        "refusal": None,
    }


def finish_reason(tokens: Sequence[Token]) -> str | None:
    return next((t.finish_reason for t in reversed(tokens) if t.finish_reason), None)


def choice(kind: str, index: int, tokens: Sequence[Token], logprobs: bool) -> dict[str, Any]:
    """One choice of a non-streaming response."""
    text = "".join(t.text for t in tokens)
    out: dict[str, Any] = {"index": index}
    if kind == CHAT:
        out["message"] = {"role": "assistant", "content": text, "refusal": None}
        out["logprobs"] = chat_logprobs(tokens) if logprobs else None
    else:
        out["text"] = text
        out["logprobs"] = completion_logprobs(tokens) if logprobs else None
    out["finish_reason"] = finish_reason(tokens)
    out["temperature_trace"] = trace(tokens)
    return out


def chunk_choice(kind: str, index: int, tokens: Sequence[Token], logprobs: bool) -> dict[str, Any]:
    """One choice of a stream chunk: the text, log-probs and trace entries of ``tokens``."""
    text = "".join(t.text for t in tokens)
    finish = finish_reason(tokens)
    out: dict[str, Any] = {"index": index}
    if kind == CHAT:
        out["delta"] = {"content": text} if text or not finish else {}
        out["logprobs"] = chat_logprobs(tokens) if logprobs else None
    else:
        out["text"] = text
        out["logprobs"] = completion_logprobs(tokens) if logprobs else None
    out["finish_reason"] = finish
    out["temperature_trace"] = trace(tokens)
    return out


def first_chat_chunk_choice(index: int) -> dict[str, Any]:
    """The chat stream's opening delta, as OpenAI sends it: the role and empty content."""
    return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
