"""OpenAI-shaped response bodies and stream chunks, with the ``temperature_trace`` extension.

``ChoiceState`` accumulates one choice (text, trace, log-probs) from the scheduler's TokenEvents;
the functions below turn it into the JSON of a response or of a stream chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scheduler import TokenEvent


@dataclass
class ChoiceState:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    updated: list[bool] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    tops: list[list[tuple[int, float]] | None] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, e: TokenEvent) -> None:
        self.text += e.text
        self.token_ids.append(e.token_id)
        self.pieces.append(e.piece)
        self.temperatures.append(e.tau)
        self.updated.append(bool(e.updated))
        self.logps.append(e.logp)
        self.tops.append(e.top_logprobs)
        if e.finish_reason is not None:
            self.finish_reason = e.finish_reason


def trace(events_or_state: ChoiceState | list[TokenEvent]) -> dict[str, list]:
    """The ``temperature_trace`` object: one entry per generated token."""
    if isinstance(events_or_state, ChoiceState):
        s = events_or_state
        return {"token_ids": s.token_ids, "tokens": s.pieces, "temperatures": s.temperatures, "updated": s.updated}
    ev = events_or_state
    return {
        "token_ids": [e.token_id for e in ev],
        "tokens": [e.piece for e in ev],
        "temperatures": [e.tau for e in ev],
        "updated": [bool(e.updated) for e in ev],
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(events: list[TokenEvent] | ChoiceState, decode, text_start: int = 0) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object."""
    if isinstance(events, ChoiceState):
        pieces, logps, tops = events.pieces, events.logps, events.tops
    else:
        pieces, logps, tops = [e.piece for e in events], [e.logp for e in events], [e.top_logprobs for e in events]
    offsets, pos = [], text_start
    for p in pieces:
        offsets.append(pos)
        pos += len(p)
    return {
        "tokens": pieces,
        "token_logprobs": logps,
        "top_logprobs": [({decode(t): v for t, v in top} if top is not None else None) for top in tops]
        if any(t is not None for t in tops)
        else None,
        "text_offset": offsets,
    }


def chat_logprobs(events: list[TokenEvent] | ChoiceState, decode) -> dict[str, Any]:
    """The chat ``logprobs`` object: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    if isinstance(events, ChoiceState):
        rows = zip(events.pieces, events.logps, events.tops)
    else:
        rows = ((e.piece, e.logp, e.top_logprobs) for e in events)
    content = []
    for piece, lp, top in rows:
        alts = [{"token": decode(t), "logprob": v, "bytes": list(decode(t).encode())} for t, v in (top or [])]
        content.append({"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": alts})
    return {"content": content}
