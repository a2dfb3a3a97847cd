"""Rollouts: G samples per prompt from the engine, checked by the reward worker, with advantages.

A rollout is the trainer's typed record of one step's experience (STYLE 5). Sequences are stored
prompt-major: sequence i belongs to prompt i // G, so a group is G adjacent rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from introllm.sampler import Engine, SamplingParams, Sequence

from .data import Problem
from .losses import group_advantages
from .rewards import RewardWorker


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
    engine: Engine,
    tokenizer,
    problems: list[Problem],
    prompt_ids: list[list[int]],
    *,
    first_index: int,
    seed: int,
    step: int,
    policy: str,
    group_size: int,
    max_new_tokens: int,
    rewards: RewardWorker,
    reward_name: str,
) -> Rollout:
    """Sample ``group_size`` completions of each prompt and score them."""
    params = [
        SamplingParams(max_new_tokens=max_new_tokens, policy=policy, seed=rollout_seed(seed, step, first_index + i))
        for i in range(len(problems))
    ]
    groups = engine.generate(prompt_ids, params, n=group_size)
    sequences = [s for g in groups for s in g]
    texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in sequences]
    per_seq = [p for p in problems for _ in range(group_size)]
    result = rewards.score(reward_name, texts, [p.answer for p in per_seq], [p.metadata for p in per_seq])
    r = torch.tensor(result.rewards, dtype=torch.float32)
    return Rollout(
        problems=list(problems),
        sequences=sequences,
        texts=texts,
        rewards=r,
        adv=group_advantages(r, group_size),
        num_reward_errors=result.num_errors,
        num_reward_timeouts=result.num_timeouts,
    )


def sequence_stats(rollout: Rollout) -> Tensor:
    """Per-sequence numbers the step metrics are built from, float64 [N, 10] (gathered across
    processes before averaging): reward, correct, length, truncated, sum tau, min tau, max tau,
    updates, sum entropy, advantage."""
    rows = []
    for s, r, a in zip(rollout.sequences, rollout.rewards.tolist(), rollout.adv.tolist()):
        tau = s.trace.tau or [float("nan")]
        rows.append([
            r, float(r >= 1.0), len(s.token_ids), float(s.finish_reason == "length"),
            sum(s.trace.tau), min(tau), max(tau), sum(s.trace.updated), sum(s.trace.entropy), a,
        ])
    return torch.tensor(rows, dtype=torch.float64)


def summarize(stats: Tensor, num_errors: int, num_timeouts: int) -> dict[str, float]:
    """Step metrics from the gathered per-sequence stats [N, 10]."""
    tokens = stats[:, 2].sum().clamp_min(1)
    return {
        "reward": float(stats[:, 0].mean()),
        "accuracy": float(stats[:, 1].mean()),
        "response_length": float(stats[:, 2].mean()),
        "truncated_frac": float(stats[:, 3].mean()),
        "tau_mean": float(stats[:, 4].sum() / tokens),
        "tau_min": float(stats[:, 5].nan_to_num(nan=float("inf")).min()),
        "tau_max": float(stats[:, 6].nan_to_num(nan=float("-inf")).max()),
        "update_rate": float(stats[:, 7].sum() / tokens),
        "entropy": float(stats[:, 8].sum() / tokens),
        "zero_adv_frac": float((stats[:, 9] == 0).double().mean()),
        "reward_errors": num_errors,
        "reward_timeouts": num_timeouts,
    }
