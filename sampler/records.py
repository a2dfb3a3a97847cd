"""Typed records between stages: what a request asks for, and what decoding produced."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class PromptRow:
    """One prompt to decode n times: what ``GenerationBatch.add`` takes, one per prompt of a request.

    Sample j draws its random numbers from stream ``first_stream + j`` of ``params.seed``, so a
    request that numbers its samples as if it were alone reproduces whatever shares its batch."""

    prompt: tuple[int, ...]
    params: SamplingParams = SamplingParams()
    n: int = 1
    """Samples of this prompt."""
    request_id: Hashable = 0
    """Whose sequences these are (``Sequence.request_id``)."""
    first_stream: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))


def prompt_rows(
    prompts, params: SamplingParams | list[SamplingParams] = SamplingParams(), n: int = 1
) -> list[PromptRow]:
    """One PromptRow per prompt (request id = its index), with one SamplingParams for all or one
    each, n samples each; sample j of prompt i on stream i * n + j, so no two samples share
    numbers. Raises ValueError when a list of params does not match the prompts."""
    params = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(params) != len(prompts):
        raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
    return [PromptRow(p, sp, n, i, i * n) for i, (p, sp) in enumerate(zip(prompts, params))]


@dataclass
class Trace:
    """Per generated token, in order: what the temperature policy did and what the sampler saw."""

    tau: list[float] = field(default_factory=list)  # temperature used (0 = greedy)
    updated: list[bool] = field(default_factory=list)  # c_t: a new temperature was chosen here
    z: list[float] = field(default_factory=list)  # Beta draw (clamped) where updated, else 0
    temp_logp: list[float] = field(default_factory=list)  # log pi_phi(c_t, z_t | h_t); 0 without a head or unscored
    logp: list[float] = field(default_factory=list)  # log-prob of the token under its sampling distribution
    entropy: list[float] = field(default_factory=list)  # entropy of that distribution (nats)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # only if SamplingParams.logprobs

    def __len__(self) -> int:
        return len(self.tau)

    def append(
        self,
        tau: float,
        updated: bool,
        z: float,
        temp_logp: float,
        logp: float = math.nan,
        entropy: float = math.nan,
        top: list[tuple[int, float]] | None = None,
    ) -> None:
        """One token's row (every backend records through here). logp / entropy: NaN where a
        backend does not compute them; top: that token's most likely alternatives, if asked."""
        self.tau.append(tau)
        self.updated.append(updated)
        self.z.append(z)
        self.temp_logp.append(temp_logp)
        self.logp.append(logp)
        self.entropy.append(entropy)
        if top is not None:
            self.top_logprobs.append(top)

    def decision(self, step: int) -> tuple[float, bool, float, float]:
        """The temperature policy's action at ``step``: (tau, updated, z, temp_logp)."""
        return self.tau[step], self.updated[step], self.z[step], self.temp_logp[step]

    def set_decision(self, step: int, tau: float, updated: bool, z: float, temp_logp: float) -> None:
        """Overwrite the policy's action of an existing row (vLLM may decide a step twice)."""
        self.tau[step], self.updated[step], self.z[step], self.temp_logp[step] = tau, updated, z, temp_logp


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
