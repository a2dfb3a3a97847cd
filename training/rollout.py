"""Rollouts: G samples per prompt from the engine, checked by the reward worker, with advantages.

A rollout is the trainer's typed record of one step's experience (STYLE 5). Sequences are stored
prompt-major: sequence i belongs to prompt i // G, so a group is G adjacent rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from introllm.sampler import GenerationEngine, SamplingParams, Sequence

from .config import RolloutConfig
from .data import Problem
from .losses import group_advantages
from .rewards import RewardResult


@dataclass
class Rollout:
    problems: list[Problem]  # the P prompts of this process
    sequences: list[Sequence]  # N = P * G finished samples, prompt-major
    texts: list[str]  # N decoded completions
    rewards: Tensor  # float32 [N]
    adv: Tensor  # float32 [N] group advantages (eq. 3)
    num_reward_errors: int = 0
    num_reward_timeouts: int = 0


def rollout_seed(seed: int, step: int, index: int) -> int:
    """Seed of prompt ``index`` (in the global batch) at training step ``step``: rollouts depend
    on (seed, step, index) only, not on RNG state, process count or batch neighbours."""
    return ((seed * 1_000_003 + step) * 1_000_033 + index) % (2**63)


def collect(
    engine: GenerationEngine,
    tokenizer,
    problems: list[Problem],
    prompt_ids: list[list[int]],
    cfg: RolloutConfig,
    *,
    policy: str,
    seed: int,
    step: int,
    first_index: int,
    score: Callable[..., RewardResult],
    group_size: int | None = None,
) -> Rollout:
    """Sample G completions of each prompt with ``engine`` (either engine: the interface is
    ``GenerationEngine``) under the temperature policy ``policy`` and score them.

    cfg: the run's [rollout] section (G = cfg.group_size unless ``group_size`` is given, as the
    held-out evaluation does; cfg.max_new_tokens). Prompt i's seed is
    ``rollout_seed(seed, step, first_index + i)``. score: ``fn(texts, answers, metadata)``, the
    reward worker's ``score`` bound to the run's reward (``functools.partial(worker.score, name)``).
    """
    G = group_size or cfg.group_size
    params = [
        SamplingParams(max_new_tokens=cfg.max_new_tokens, policy=policy, seed=rollout_seed(seed, step, first_index + i))
        for i in range(len(problems))
    ]
    groups = engine.generate(prompt_ids, params, n=G)
    sequences = [s for g in groups for s in g]
    texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in sequences]
    per_seq = [p for p in problems for _ in range(G)]
    result = score(texts, [p.answer for p in per_seq], [p.metadata for p in per_seq])
    r = torch.tensor(result.rewards, dtype=torch.float32)
    return Rollout(
        problems=list(problems),
        sequences=sequences,
        texts=texts,
        rewards=r,
        adv=group_advantages(r, G),
        num_reward_errors=result.num_errors,
        num_reward_timeouts=result.num_timeouts,
    )


def shuffle_rewards(rollout: Rollout, *, seed: int) -> Rollout:
    """The null control's rollout: its rewards permuted over all its samples (a generator seeded
    with ``seed``), advantages recomputed (eq. 3), everything else unchanged. The step's mean
    reward stays the same; which sample, token or temperature earned a reward is forgotten.

    >>> import torch
    >>> ro = Rollout([], [], [], torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4))
    >>> sorted(shuffle_rewards(ro, seed=0).rewards.tolist()) == [0.0, 0.0, 0.0, 1.0]
    True
    """
    G = len(rollout.rewards) // max(len(rollout.problems), 1) if rollout.problems else len(rollout.rewards)
    order = torch.randperm(len(rollout.rewards), generator=torch.Generator().manual_seed(seed % (2**63)))
    rewards = rollout.rewards[order]
    return dataclasses.replace(rollout, rewards=rewards, adv=group_advantages(rewards, max(G, 1)))


@dataclass
class SequenceStats:
    """Per-sequence numbers the step metrics are built from, one float64 tensor [N] each.

    Gathered across processes as one [N, len(FIELDS)] tensor (``stack`` / ``unstack``), so that
    ``summarize`` and the method hooks see the whole batch."""

    reward: Tensor
    correct: Tensor  # 1.0 where reward >= 1
    length: Tensor  # completion tokens
    truncated: Tensor  # 1.0 where cut at max_new_tokens
    tau_sum: Tensor  # sum of the sequence's tau over its tokens
    tau_min: Tensor  # NaN for an empty completion
    tau_max: Tensor
    updates: Tensor  # number of tokens where the head updated tau (c_t = 1)
    entropy_sum: Tensor  # sum of the per-token entropies under the recorded tau (nats)
    adv: Tensor  # group advantage (eq. 3)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def of(cls, rollout: Rollout, entropy_sum: Tensor | None = None) -> SequenceStats:
        """From a rollout; ``entropy_sum`` [N] (the update's, ``UpdateStats.entropy_sum``) replaces the
        traces' entropies, which a backend that computes none leaves NaN."""
        rows = []
        entropies = (
            entropy_sum.tolist() if entropy_sum is not None else [sum(s.trace.entropy) for s in rollout.sequences]
        )
        for s, r, a, ent in zip(rollout.sequences, rollout.rewards.tolist(), rollout.adv.tolist(), entropies):
            tau = s.trace.tau or [float("nan")]
            rows.append(
                [
                    r,
                    float(r >= 1.0),
                    len(s.token_ids),
                    float(s.finish_reason == "length"),
                    sum(s.trace.tau),
                    min(tau),
                    max(tau),
                    sum(s.trace.updated),
                    ent,
                    a,
                ]
            )
        return cls.unstack(torch.tensor(rows, dtype=torch.float64).view(-1, len(cls.fields())))

    def stack(self) -> Tensor:
        """float64 [N, F] in ``fields()`` order (what ``accelerator.gather`` takes)."""
        return torch.stack([getattr(self, f) for f in self.fields()], dim=1)

    @classmethod
    def unstack(cls, table: Tensor) -> SequenceStats:
        return cls(*table.unbind(1))


def summarize(stats: SequenceStats, num_errors: int, num_timeouts: int) -> dict[str, float]:
    """Step metrics from the (gathered) per-sequence stats."""
    tokens = stats.length.sum().clamp_min(1)
    return {
        "reward": float(stats.reward.mean()),
        "accuracy": float(stats.correct.mean()),
        "response_length": float(stats.length.mean()),
        "truncated_frac": float(stats.truncated.mean()),
        "tau_mean": float(stats.tau_sum.sum() / tokens),
        "tau_min": float(stats.tau_min.nan_to_num(nan=float("inf")).min()),
        "tau_max": float(stats.tau_max.nan_to_num(nan=float("-inf")).max()),
        "update_rate": float(stats.updates.sum() / tokens),
        "entropy": float(stats.entropy_sum.sum() / tokens),
        "zero_adv_frac": float((stats.adv == 0).double().mean()),
        "reward_errors": num_errors,
        "reward_timeouts": num_timeouts,
    }
