"""Typed records between stages: what a request asks for, and what decoding produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request. Validated on construction."""

    max_new_tokens: int = 256
    """Most tokens to generate per sample."""
    policy: str = "learned"
    """Temperature policy spec, see ``policies`` (``learned``, ``fixed:0.7``, ``greedy``, ``ead``...)."""
    seed: int | None = None
    """Seed of the request's random numbers; its samples draw from distinct streams of it. None: random."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end a sequence (the stop token is kept in the output)."""
    ignore_eos: bool = False
    """Keep going past the model's end-of-sequence tokens."""
    top_k: int = 0
    """Keep only the k most likely tokens after the temperature; 0 = off. Off in training."""
    top_p: float = 1.0
    """Keep the smallest set of tokens with this much probability after the temperature; 1 = off."""
    logprobs: int = 0
    """Also record, per token, this many most likely alternatives with their log-probs (max 20)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.logprobs <= 20:
            raise ValueError(f"logprobs must be in [0, 20], got {self.logprobs}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclass
class Trace:
    """Per generated token, in order: what the temperature policy did and what the sampler saw."""

    tau: list[float] = field(default_factory=list)  # temperature used (0 = greedy)
    updated: list[bool] = field(default_factory=list)  # c_t: a new temperature was chosen here
    z: list[float] = field(default_factory=list)  # Beta draw (clamped) where updated, else 0
    temp_logp: list[float] = field(default_factory=list)  # log pi_phi(c_t, z_t | h_t); 0 without a head
    logp: list[float] = field(default_factory=list)  # log-prob of the token under its sampling distribution
    entropy: list[float] = field(default_factory=list)  # entropy of that distribution (nats)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # only if SamplingParams.logprobs


@dataclass
class Sequence:
    """One sample: grows by one token per step until ``finish_reason`` is set."""

    request_id: Hashable
    sample_index: int
    prompt_ids: list[int]
    seed: int
    policy: str
    token_ids: list[int] = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)
    finish_reason: str | None = None  # "stop" (EOS or a stop token), "length", or "cancelled"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
