"""The engine interface, declared once: what the trainer's rollouts (``training.rollout.collect``)
and the server's scheduler (``server.scheduler``) use of an engine. ``engine.Engine`` (torch) and
``vllm_engine.VLLMEngine`` both satisfy it; neither inherits from it (structural typing, PEP 544).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Protocol, runtime_checkable

from .policies import TemperaturePolicy
from .records import PromptRow, SamplingParams, Sequence


@runtime_checkable
class GenerationBatch(Protocol):
    """The running requests of an engine (``engine.DecodeBatch``, ``vllm_engine.VLLMBatch``)."""

    rows: list[Sequence]
    """The unfinished sequences, in the batch's order."""

    score_actions: bool
    """Record the log-prob of each head decision in the traces (a trainer needs it; a server sets False)."""

    @property
    def num_running(self) -> int: ...

    def add(self, rows: Seq[PromptRow]) -> list[list[Sequence]]:
        """Queue prompts (one PromptRow each, its n samples); per row its new sequences. ValueError for bad input."""
        ...

    def cancel(self, sequences: Seq[Sequence]) -> None:
        """Drop sequences before the next step (finish_reason "cancelled")."""
        ...

    def step(self, on_sampled=None) -> list[Sequence]:
        """One decode step; the sequences that got a token (finished ones with finish_reason set).
        ``on_sampled(sequences)`` is called with them as soon as their tokens are drawn (before the
        forward pass for the next step, where the backend separates the two); it must not add or
        cancel sequences."""
        ...


@runtime_checkable
class GenerationEngine(Protocol):
    """A decoding engine with temperature policies (``engine.Engine``, ``vllm_engine.VLLMEngine``)."""

    def policy(self, spec: str) -> TemperaturePolicy:
        """The policy object for a policy spec ("learned", "fixed:0.7", ...); ValueError if unknown."""
        ...

    def new_batch(self) -> GenerationBatch:
        """An empty batch to add requests to and step."""
        ...

    def generate(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams | Seq[SamplingParams] = ...,
        n: int = 1,
        on_step: Callable[[list[Sequence]], None] | None = None,
    ) -> list[list[Sequence]]:
        """Decode every prompt n times; per prompt, its n finished sequences (with traces)."""
        ...
