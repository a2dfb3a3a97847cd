"""The torch engine's decode step in float32 against bfloat16, and the learned head's cost, paired.

    python benchmarks/torch_dtypes.py                     # batch 1 and 16, 64 paired steps each
    python benchmarks/torch_dtypes.py --profile           # also where a step's time goes, per dtype
    python benchmarks/torch_dtypes.py --batch-sizes 1 --steps 16 --json out.json

Both dtypes of the embedded model are loaded in one process and stepped alternately (A-B, B-A,
...), so each pair of consecutive steps runs under the same machine load; the speed-up is the
median of the per-pair ratios t_float32 / t_bfloat16, reported with its quartiles. The learned
head's overhead in the bf16 engine is ``bench.step_overhead`` (learned vs fixed:1.0, paired). The
batch-1 step is also shown as a share of the memory-bandwidth limit (bandwidth / bytes of
weights, as in benchmarks/servers.py). The targets: bf16 >= 1.5x float32 at batch 1 and
16 on a CPU with native bf16, batch 1 >= 50 % of the bandwidth limit, head overhead <= 2 %.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from introllm.benchmarks.engine import _prompt_ids, step_overhead  # noqa: E402
from introllm.benchmarks.servers import base_weight_numel, cpu_description, memory_bandwidth_gbs  # noqa: E402
from introllm.sampler import Engine, SamplingParams  # noqa: E402
from introllm.sampler.models import default_checkpoint, load_model, quiet_transformers  # noqa: E402
from introllm.sampler.records import prompt_rows  # noqa: E402


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def paired_steps(engines: dict[str, Engine], prompts: list[list[int]], steps: int) -> dict[str, list[float]]:
    """Seconds per decode step of each engine, stepped alternately on the same prompts."""
    batches = {}
    for name, engine in engines.items():
        batch = engine.new_batch()
        batch.add(prompt_rows(prompts, SamplingParams(max_new_tokens=steps + 4, seed=0, ignore_eos=True)))
        batch.step()  # packing, allocations
        batches[name] = batch
    names = list(engines)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(steps):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            batches[name].step()
            times[name].append(time.perf_counter() - start)
    return times


def policy_cost_ms(engine: Engine, batch_size: int, repeats: int = 50) -> dict[str, float]:
    """Median ms of the temperature decision alone (``act_mixed``) for ``learned`` and
    ``fixed:1.0`` on [batch_size, d] hidden states of the model's dtype: the head's direct cost,
    which whole-step pairs bury in noise on a loaded machine."""
    from introllm.sampler.policies import act_mixed
    from introllm.sampler.rng import uniforms

    d = engine.lm_head.weight.shape[1]
    h = torch.randn(batch_size, d).to(engine.lm_head.weight.dtype)
    step, tau = torch.zeros(batch_size, dtype=torch.long), torch.ones(batch_size)
    rand = uniforms(torch.zeros(batch_size, dtype=torch.long), step, torch.arange(batch_size))
    which = torch.zeros(batch_size, dtype=torch.long)
    out = {}
    with torch.inference_mode():
        for spec in ("learned", "fixed:1.0"):
            policies = [engine.policy(spec)]
            act_mixed(policies, which, h, step, tau, rand)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                act_mixed(policies, which, h, step, tau, rand)
                times.append(time.perf_counter() - start)
            out[spec] = 1000 * statistics.median(times)
    return out


def profile_step(engine: Engine, prompts: list[list[int]], steps: int = 8, rows: int = 8) -> list[dict]:
    """Top ops by self CPU time over ``steps`` decode steps: [{op, ms_per_step, share}]."""
    from torch.profiler import ProfilerActivity, profile

    batch = engine.new_batch()
    batch.add(prompt_rows(prompts, SamplingParams(max_new_tokens=steps + 4, seed=0, ignore_eos=True)))
    batch.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            batch.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {"op": e.key, "ms_per_step": e.self_cpu_time_total / 1000 / steps, "share": e.self_cpu_time_total / total}
        for e in events[:rows]
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="checkpoint directory [the embedded model]")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated [1,16]")
    p.add_argument("--steps", type=int, default=64, help="paired decode steps per batch size [64]")
    p.add_argument("--profile", action="store_true", help="also profile a few steps of each dtype")
    p.add_argument("--json", type=Path, help="write the measurements here")
    args = p.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if any(b < 1 for b in batch_sizes) or args.steps < 2:
            raise ValueError
    except ValueError:
        p.error(
            f"--batch-sizes must be positive integers separated by commas and --steps >= 2; got {args.batch_sizes!r}"
        )
    quiet_transformers()
    checkpoint = args.checkpoint or default_checkpoint()
    cpu = cpu_description()
    bandwidth = memory_bandwidth_gbs()
    numel = base_weight_numel(Path(checkpoint))
    print(
        f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}, native bf16: {cpu['native_bf16']}; "
        f"torch threads {cpu['torch_threads']}; read bandwidth {bandwidth:.1f} GB/s",
        flush=True,
    )
    loaded = {dt: load_model(str(checkpoint), "cpu", dt) for dt in ("float32", "bfloat16")}
    engines = {dt: Engine(ck.model, ck.head) for dt, ck in loaded.items()}
    # bf16 as before the packed kernels: the same fused step on F.linear (no packed oneDNN bf16 weights).
    engines["bfloat16 unpacked"] = Engine(loaded["bfloat16"].model, loaded["bfloat16"].head, fast_cpu_kernels=False)
    tokenizer = loaded["float32"].tokenizer
    out = {"cpu": cpu, "memory_bandwidth_gbs": bandwidth, "steps": args.steps, "results": []}
    for b in batch_sizes:
        prompts = _prompt_ids(tokenizer, b)
        times = paired_steps(engines, prompts, args.steps)
        ratios = [a / c for a, c in zip(times["float32"], times["bfloat16"])]
        unpacked = [a / c for a, c in zip(times["bfloat16 unpacked"], times["bfloat16"])]
        head = step_overhead(engines["bfloat16"], prompts, "learned", "fixed:1.0", steps=args.steps)
        cost = policy_cost_ms(engines["bfloat16"], b)
        res = {
            "batch_size": b,
            "policy_ms_bf16": cost,
            "ratio_quartiles": quartiles(ratios),
            "packed_vs_unpacked_bf16_quartiles": quartiles(unpacked),
            "head_overhead_bf16": head,
        }
        for dt, ts in times.items():
            lo, med, hi = quartiles(ts)
            limit = bandwidth * 1e9 / (numel * (4 if dt == "float32" else 2))
            res[dt] = {
                "step_ms_quartiles": [1000 * lo, 1000 * med, 1000 * hi],
                "tokens_per_s": b / med,
                "bandwidth_limit_tok_s": limit,
                "share_of_limit": (1 / med) / limit if b == 1 else None,
            }
            print(
                f"batch {b:3d} {dt:17s} step {1000 * med:8.2f} ms (IQR {1000 * lo:.2f}-{1000 * hi:.2f}), {b / med:8.1f} tok/s"
                + (f", {100 / med / limit:.0f} % of the {limit:.0f} tok/s bandwidth limit" if b == 1 else ""),
                flush=True,
            )
        q1, m, q3 = res["ratio_quartiles"]
        print(
            f"batch {b:3d} bfloat16 / float32 speed: {m:.2f}x (paired, quartiles {q1:.2f}-{q3:.2f}); "
            f"packed bf16 vs unpacked bf16: {statistics.median(unpacked):.2f}x; "
            f"learned head overhead in bf16: {100 * head['overhead']:+.1f} % (paired steps), "
            f"{100 * (cost['learned'] - cost['fixed:1.0']) / (1000 * statistics.median(times['bfloat16'])):+.2f} % "
            f"(its decision alone: {cost['learned']:.3f} vs {cost['fixed:1.0']:.3f} ms)",
            flush=True,
        )
        if args.profile:
            for dt, engine in engines.items():
                dt = dt.replace(" ", "_")
                res[f"profile_{dt}"] = profile_step(engine, prompts)
                print(
                    f"  where a {dt} step goes (self CPU time): "
                    + ", ".join(f"{r['op']} {100 * r['share']:.0f} %" for r in res[f"profile_{dt}"][:6]),
                    flush=True,
                )
        out["results"].append(res)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
