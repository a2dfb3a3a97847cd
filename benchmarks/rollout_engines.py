"""Where a vLLM rollout's time goes: vLLM against the torch engine, each with the learned head and
with a fixed tau (vLLM then runs untouched by our hooks), on the same prompts and seeds.

    python benchmarks/rollout_engines.py                    # 4 prompts x 8 samples, compiled vLLM
    python benchmarks/rollout_engines.py --prompts 16       # 128 sequences at a time
    python benchmarks/rollout_engines.py --vllm-eager --json out.json

A rollout is what one training process samples in a step: ``prompts`` x ``group_size`` sequences
of ``new_tokens`` tokens (EOS ignored, so every run decodes the same number of tokens), float32
(the training precision). Runs alternate engine by engine, policy by policy, ``repeats`` rounds
after one warm-up each; medians are reported. "hooks" is the time spent in what the learned head
adds to vLLM (its logits processor and the trace bookkeeping: ``VLLMEngine.hook_seconds``).
This separates vLLM's own decode speed (fixed tau) from our processor's cost (learned - fixed),
which the rollout target (vLLM >= 1.3x the torch engine, docs/training.md) depends on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from introllm.benchmarks.servers import cpu_description  # noqa: E402
from introllm.sampler import Engine, SamplingParams  # noqa: E402
from introllm.sampler.models import default_checkpoint, load_model  # noqa: E402
from introllm.training.config import DataConfig  # noqa: E402
from introllm.training.data import encode_prompt, load_problems  # noqa: E402
from introllm.training.vllm_rollout import VLLMRollouts  # noqa: E402

POLICIES = ("learned", "fixed:1.0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=4, help="prompts per rollout [4]")
    ap.add_argument("--group-size", type=int, default=8, help="samples per prompt [8]")
    ap.add_argument("--new-tokens", type=int, default=48, help="tokens per sample, EOS ignored [48]")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds after the warm-up [2]")
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM without torch.compile")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if min(args.prompts, args.group_size, args.new_tokens, args.repeats) < 1:
        ap.error("--prompts, --group-size, --new-tokens and --repeats must be >= 1")

    ck = load_model(device="cpu", dtype="float32")
    data = DataConfig(num_problems=max(50, args.prompts))
    problems, _ = load_problems(data)
    prompts = [encode_prompt(p, data, ck.tokenizer) for p in problems[: args.prompts]]
    n = args.prompts * args.group_size
    vllm = VLLMRollouts(
        default_checkpoint(),
        ck.model,
        ck.head,
        memory=0.05,
        dtype="float32",
        eager=args.vllm_eager,
        max_batch=n,
        engine_args={"max_model_len": max(map(len, prompts)) + args.new_tokens + 8},
    )
    engines = {"vllm": vllm, "torch": Engine(ck.model, ck.head)}

    def run(name: str, policy: str, seed: int) -> tuple[float, float]:
        params = SamplingParams(max_new_tokens=args.new_tokens, policy=policy, seed=seed, ignore_eos=True)
        hooks = vllm.engine.hook_seconds()
        start = time.perf_counter()
        engines[name].generate(prompts, params, n=args.group_size)
        return time.perf_counter() - start, vllm.engine.hook_seconds() - hooks

    for name in engines:
        run(name, "learned", 0)  # warm-up (vLLM: compiled shapes, caches)
    times = {(e, p): [] for e in engines for p in POLICIES}
    hooks = {p: [] for p in POLICIES}
    for r in range(args.repeats):
        for name in engines:
            for policy in POLICIES:
                seconds, hook = run(name, policy, r + 1)
                times[name, policy].append(seconds)
                if name == "vllm":
                    hooks[policy].append(hook)

    tokens = n * args.new_tokens
    cpu = cpu_description()
    print(
        f"{cpu['model']} ({' '.join(cpu['flags'])}), {cpu['cores']} cores; {n} sequences x {args.new_tokens} tokens, float32, vLLM {'eager' if args.vllm_eager else 'compiled'}"
    )
    print(f"{'engine':<7}{'policy':<11}{'seconds':>9}{'tok/s':>9}{'hooks s':>9}")
    rows = []
    for (name, policy), xs in times.items():
        med = statistics.median(xs)
        hook = statistics.median(hooks[policy]) if name == "vllm" else 0.0
        rows.append(
            {"engine": name, "policy": policy, "seconds": xs, "tokens_per_s": tokens / med, "hook_seconds": hook}
        )
        print(f"{name:<7}{policy:<11}{med:>9.2f}{tokens / med:>9.1f}{hook:>9.2f}")
    med = {(r["engine"], r["policy"]): statistics.median(r["seconds"]) for r in rows}
    summary = {
        "vllm_over_torch_learned": med["torch", "learned"] / med["vllm", "learned"],
        "vllm_over_torch_fixed": med["torch", "fixed:1.0"] / med["vllm", "fixed:1.0"],
        "vllm_learned_cost": med["vllm", "learned"] / med["vllm", "fixed:1.0"] - 1,
    }
    print(
        f"vLLM speed / torch engine speed: learned {summary['vllm_over_torch_learned']:.2f}x, fixed tau "
        f"{summary['vllm_over_torch_fixed']:.2f}x; the learned head's cost inside vLLM {summary['vllm_learned_cost']:+.1%}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu,
                    "sequences": n,
                    "new_tokens": args.new_tokens,
                    "vllm_eager": args.vllm_eager,
                    "rows": rows,
                    **summary,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
