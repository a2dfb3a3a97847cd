"""Typed records between the scheduler and the response builders.

One ``Token`` per generated token of one choice, made once in the decode thread and read as is by
every builder (the non-streaming body, each stream chunk, the trace, both log-prob shapes), so a
token's record never changes shape on its way to the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLogprob:
    """A token with its log-probability under the distribution it was sampled from (after tau,
    top-k and top-p). ``token`` is OpenAI's name for it and ``raw`` its own bytes (see tokens)."""

    token_id: int
    token: str
    raw: bytes
    logprob: float | None
    """Finite: -9999.0 for a token filtered out (-inf); None where the backend did not compute it."""


@dataclass(frozen=True)
class Token:
    """One generated token of one choice (choice index = prompt index * n + sample index)."""

    index: int
    """The choice it belongs to."""
    sampled: TokenLogprob
    """The token itself: id, OpenAI name, raw bytes, log-prob."""
    piece: str
    """The text this token adds to the decoded output (temperature_trace ``tokens``); "" for a
    token that holds only part of a character (its character comes with the token completing it)."""
    text: str
    """Text to append to the choice's output now (text that could start a stop string is held back)."""
    text_offset: int
    """Characters of the choice's decoded text before this token's first character."""
    tau: float
    """Temperature this token was sampled at (0 = greedy)."""
    updated: bool
    """c_t: the policy chose a new temperature at this token."""
    top: tuple[TokenLogprob, ...] | None
    """The most likely alternatives, best first, when the request asked for log-probs."""
    finish_reason: str | None
    """Set on the choice's last token: "stop", "length"."""

    @property
    def token_id(self) -> int:
        return self.sampled.token_id


@dataclass(frozen=True)
class Done:
    """The request's last message: all its choices finished."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """The request failed inside the server (5xx)."""

    message: str
