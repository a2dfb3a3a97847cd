"""Step-time overhead of learned temperatures in training: an IntroLLM step (learned policy in the
rollout, steps A and B in the update) against a fixed-temperature GRPO step (step A only), on the
same model, prompts and seeds.

Generation ignores EOS, so both methods produce exactly the same number of tokens and do the same
work except for what the method adds (the head in the decode loop, its forward and backward on
the hidden states, its optimizer). The two steps alternate (ABBA order) and the reported figure is
the median of the per-pair ratios, so both see the same machine load.

``methods=("head-only", "introllm")`` instead compares a head-only step (``--freeze-model``: the
learned rollout, then step B alone with the base under no_grad) with a joint IntroLLM step.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from introllm.sampler import Engine, SamplingParams, build_policy

from .losses import group_advantages
from .update import PolicyScorer, update


@dataclass
class StepTimes:
    method: str
    step: list[float] = field(default_factory=list)
    rollout: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)


def train_step_overhead(model, head, prompts: list[list[int]], *, group_size: int = 8, new_tokens: int = 48,
                        repeats: int = 5, micro_batch_size: int = 8, on_measure=None,
                        methods: tuple[str, str] = ("introllm", "grpo")) -> dict:
    """Paired step times of ``methods[0]`` against ``methods[1]`` (each of introllm, grpo,
    head-only); ``step_overhead`` is the median of the paired ratios minus 1."""
    engine = Engine(model, head)
    opt_model = torch.optim.AdamW(model.parameters(), lr=1e-6)
    opt_head = torch.optim.AdamW(head.parameters(), lr=5e-5)
    n = len(prompts) * group_size
    adv = group_advantages(torch.tensor([float(i % 3 == 0) for i in range(n)]), group_size)
    first, second = methods
    times = {first: StepTimes(first), second: StepTimes(second)}

    def step(method: str, seed: int) -> None:
        learned, frozen = method in ("introllm", "head-only"), method == "head-only"
        spec = "learned" if learned else "fixed:1"
        t0 = time.perf_counter()
        params = SamplingParams(max_new_tokens=new_tokens, policy=spec, seed=seed, ignore_eos=True)
        seqs = [s for g in engine.generate(prompts, params, n=group_size) for s in g]
        t1 = time.perf_counter()
        model.train()
        update(PolicyScorer(model, head if learned else None, freeze_model=frozen), model, head if learned else None,
               build_policy(spec, head) if learned else None, seqs, adv,
               optimizers={**({} if frozen else {"optimizer_model": opt_model}), **({"optimizer_head": opt_head} if learned else {})},
               pad_id=0, clip_eps=0.2, max_grad_norm=1.0, micro_batch_size=micro_batch_size)
        t2 = time.perf_counter()
        rec = times[method]
        rec.rollout.append(t1 - t0), rec.update.append(t2 - t1), rec.step.append(t2 - t0)
        if on_measure:
            on_measure(method, t2 - t0, t1 - t0, t2 - t1)

    step(second, 0)  # warm-up, not counted
    times[second] = StepTimes(second)
    for r in range(repeats):
        order = (first, second) if r % 2 == 0 else (second, first)
        for method in order:
            step(method, r + 1)
    a, b = times[first], times[second]
    ratio = lambda x, y: statistics.median(p / q for p, q in zip(x, y))  # noqa: E731
    return {
        "prompts": len(prompts), "group_size": group_size, "new_tokens": new_tokens, "repeats": repeats,
        "step_overhead": ratio(a.step, b.step) - 1,
        "rollout_overhead": ratio(a.rollout, b.rollout) - 1,
        "update_overhead": ratio(a.update, b.update) - 1,
        "methods": list(methods),
        "median_step_seconds": {first: statistics.median(a.step), second: statistics.median(b.step)},
        "median_rollout_seconds": {first: statistics.median(a.rollout), second: statistics.median(b.rollout)},
        "raw": {k: asdict(v) for k, v in times.items()},
    }
