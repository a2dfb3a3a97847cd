"""Step-time overhead of learned temperatures in training: an IntroLLM step (learned policy in the
rollout, steps A and B in the update) against a fixed-temperature GRPO step (step A only), on the
same model, prompts and seeds.

Generation ignores EOS, so both methods produce exactly the same number of tokens and do the same
work except for what the method adds (the head in the decode loop, its forward and backward on
the hidden states, its optimizer). The two steps alternate (ABBA order) and the reported figure is
the median of the per-pair ratios, so both see the same machine load.

``rollout_backend_comparison`` times whole IntroLLM steps with torch-engine rollouts against
colocated-vLLM rollouts.

``methods=("head-only", "introllm")`` instead compares a head-only step (``--freeze-model``: the
learned rollout, then step B alone with the base under no_grad) with a joint IntroLLM step.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from introllm.sampler import Engine, SamplingParams, build_policy
from introllm.training.config import OptimConfig
from introllm.training.losses import group_advantages
from introllm.training.update import PolicyScorer, update


@dataclass
class StepTimes:
    method: str
    step: list[float] = field(default_factory=list)
    rollout: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)


def train_step_overhead(
    model,
    head,
    prompts: list[list[int]],
    *,
    group_size: int = 8,
    new_tokens: int = 48,
    repeats: int = 5,
    micro_batch_size: int = 8,
    on_measure=None,
    methods: tuple[str, str] = ("introllm", "grpo"),
) -> dict:
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
        update(
            PolicyScorer(model, head if learned else None, freeze_model=frozen),
            model,
            head if learned else None,
            build_policy(spec, head) if learned else None,
            seqs,
            adv,
            optimizers={
                **({} if frozen else {"optimizer_model": opt_model}),
                **({"optimizer_head": opt_head} if learned else {}),
            },
            pad_id=0,
            optim=OptimConfig(micro_batch_size=micro_batch_size),
        )
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
        "prompts": len(prompts),
        "group_size": group_size,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "step_overhead": ratio(a.step, b.step) - 1,
        "rollout_overhead": ratio(a.rollout, b.rollout) - 1,
        "update_overhead": ratio(a.update, b.update) - 1,
        "methods": list(methods),
        "median_step_seconds": {first: statistics.median(a.step), second: statistics.median(b.step)},
        "median_rollout_seconds": {first: statistics.median(a.rollout), second: statistics.median(b.rollout)},
        "raw": {k: asdict(v) for k, v in times.items()},
    }


def rollout_backend_comparison(
    model,
    head,
    checkpoint,
    prompts: list[list[int]],
    *,
    group_size: int = 8,
    new_tokens: int = 48,
    repeats: int = 3,
    micro_batch_size: int = 8,
    vllm_memory: float = 0.05,
    eager: bool = True,
    vllm_dtype: str = "float32",
    on_measure=None,
) -> dict:
    """Whole IntroLLM training steps with torch-engine rollouts against colocated-vLLM rollouts,
    on the same model, head, prompts and seeds, in ABBA order; median of the paired ratios.

    A step is: the learned-policy rollout (``len(prompts) * group_size`` samples of ``new_tokens``
    tokens, EOS ignored, so both engines produce the same number of tokens), steps A and B with
    AdamW, and for vLLM the in-place weight sync (part of its step). Both engines always sample
    with the current weights: the torch engine reads them, vLLM gets them after every update
    (after a torch step too, untimed; otherwise vLLM would sample with stale weights and the
    logp gap would measure the staleness).
    Returns rollout tokens/s, rollout / update / sync / step seconds per backend, the ratios
    (torch time / vLLM time: > 1 means vLLM is faster) and the logp gap of vLLM's rollouts.
    eager: vLLM without torch.compile (False: compiled, as the trainer's ``vllm_eager = false``).
    vllm_dtype: vLLM's precision (the trainer's ``vllm_dtype``); the model trains in its own (float32
    here), so with "bfloat16" the logp gap is the rounding's and TIS (cap 2) corrects it.
    """
    from introllm.training.vllm_rollout import VLLMRollouts

    threads_before = torch.get_num_threads()
    engines = {"torch": Engine(model, head)}
    vllm = VLLMRollouts(
        checkpoint,
        model,
        head,
        memory=vllm_memory,
        dtype=vllm_dtype,
        eager=eager,
        max_batch=len(prompts) * group_size,
        engine_args={"max_model_len": max(map(len, prompts)) + new_tokens + 8},
    )
    engines["vllm"] = vllm
    threads_after = torch.get_num_threads()
    opt = {
        "optimizer_model": torch.optim.AdamW(model.parameters(), lr=1e-6),
        "optimizer_head": torch.optim.AdamW(head.parameters(), lr=5e-5),
    }
    n = len(prompts) * group_size
    adv = group_advantages(torch.tensor([float(i % 3 == 0) for i in range(n)]), group_size)
    rec = {
        b: {
            "rollout": [],
            "update": [],
            "sync": [],
            "step": [],
            "mismatch_max": [],
            "mismatch_mean": [],
            "mismatch_frac": [],
            "tis_weight_mean": [],
            "tis_capped_frac": [],
            "temp_mismatch_max": [],
            "temp_mismatch_mean": [],
        }
        for b in engines
    }

    def step(backend: str, seed: int) -> None:
        t0 = time.perf_counter()
        params = SamplingParams(max_new_tokens=new_tokens, policy="learned", seed=seed, ignore_eos=True)
        seqs = [s for g in engines[backend].generate(prompts, params, n=group_size) for s in g]
        t1 = time.perf_counter()
        model.train()
        stats = update(
            PolicyScorer(model, head),
            model,
            head,
            build_policy("learned", head),
            seqs,
            adv,
            optimizers=opt,
            pad_id=0,
            optim=OptimConfig(micro_batch_size=micro_batch_size),
        )
        model.eval()
        t2 = time.perf_counter()
        sync = vllm.sync() if backend == "vllm" else 0.0
        t3 = time.perf_counter()
        if backend == "torch":  # vLLM must sample the next step with these weights too (not timed)
            vllm.sync()
        r = rec[backend]
        r["rollout"].append(t1 - t0), r["update"].append(t2 - t1), r["sync"].append(sync), r["step"].append(t3 - t0)
        r["mismatch_max"].append(stats.logp_mismatch), r["mismatch_mean"].append(stats.logp_mismatch_mean)
        r["mismatch_frac"].append(stats.logp_mismatch_frac)
        r["tis_weight_mean"].append(stats.tis_weight_mean), r["tis_capped_frac"].append(stats.tis_capped_frac)
        (
            r["temp_mismatch_max"].append(stats.temp_logp_mismatch),
            r["temp_mismatch_mean"].append(stats.temp_logp_mismatch_mean),
        )
        if on_measure:
            on_measure(backend, t3 - t0, t1 - t0, t2 - t1, sync)

    step("torch", 0), step("vllm", 0)  # warm-up, not counted
    vllm.sync_seconds.clear()
    rec = {b: {k: [] for k in v} for b, v in rec.items()}
    for r in range(repeats):
        for backend in ("torch", "vllm") if r % 2 == 0 else ("vllm", "torch"):
            step(backend, r + 1)
    t, v = rec["torch"], rec["vllm"]
    ratio = lambda x, y: statistics.median(p / q for p, q in zip(x, y))  # noqa: E731
    tokens = n * new_tokens
    return {
        "prompts": len(prompts),
        "group_size": group_size,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "vllm_eager": eager,
        "vllm_dtype": vllm.engine.dtype,
        "train_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "torch_threads": {"before_vllm": threads_before, "after_vllm": threads_after},
        "rollout_tokens_per_s": {b: tokens / statistics.median(rec[b]["rollout"]) for b in rec},
        "median_seconds": {
            b: {k: statistics.median(rec[b][k]) for k in ("rollout", "update", "sync", "step")} for b in rec
        },
        "rollout_speedup": ratio(t["rollout"], v["rollout"]),  # torch time / vLLM time, paired
        "step_speedup": ratio(t["step"], v["step"]),
        "vllm_logp_gap": {
            k: max(v[k])
            for k in ("mismatch_max", "mismatch_mean", "mismatch_frac", "temp_mismatch_max", "temp_mismatch_mean")
        },
        "vllm_tis": {
            "weight_mean": statistics.mean(v["tis_weight_mean"]),
            "capped_frac_max": max(v["tis_capped_frac"]),
        },
        "torch_logp_gap": {k: max(t[k]) for k in ("mismatch_max", "mismatch_mean", "mismatch_frac")},
        "raw": rec,
    }
