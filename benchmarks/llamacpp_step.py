"""Where a llama.cpp-backend decode step's time goes, learned tau against tau 1, without a server.

    python benchmarks/llamacpp_step.py                    # batch 1, 300 steps per run, 2 rounds
    python benchmarks/llamacpp_step.py --batch-size 16 --steps 100
    python benchmarks/llamacpp_step.py --score-actions    # as a trainer's batch: the head's log-probs too

The embedded model from its GGUF (needs ``introllm[llamacpp]``). Each round decodes one chat prompt
``batch-size`` times under ``fixed:1.0`` and then ``learned``, timing the parts of every step:
``llama_decode`` (with the copy of logits and hidden states out of llama.cpp), the counter-based
uniforms, the temperature policy, ``sample_tokens``, and the rest. Rounds alternate the two
policies so that both see the same machine load; pause anything else first. Prints ms per step.
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time

import torch

from introllm.benchmarks.servers import cpu_description
from introllm.sampler import batch as batch_module
from introllm.sampler.records import PromptRow, SamplingParams


def timed(owner, name: str, label: str, totals: dict[str, float]) -> None:
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``totals[label]``."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=1, help="sequences decoded together [1]")
    ap.add_argument("--steps", type=int, default=300, help="decode steps per run [300]")
    ap.add_argument("--rounds", type=int, default=2, help="tau-1 / learned pairs [2]")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads [all cores]")
    ap.add_argument("--score-actions", action="store_true", help="also score the head's decisions (a trainer's batch)")
    args = ap.parse_args(argv)
    if min(args.batch_size, args.steps, args.rounds) < 1:
        ap.error("--batch-size, --steps and --rounds must be >= 1")

    from introllm.sampler.backends import require_llamacpp
    from introllm.sampler.llamacpp_engine import load_llamacpp

    require_llamacpp("benchmarks/llamacpp_step.py")
    torch.set_num_threads(1)
    engine, tokenizer, _ = load_llamacpp(threads=args.threads, max_batch=max(args.batch_size, 4))
    totals: dict[str, float] = collections.defaultdict(float)
    timed(engine, "decode_last", "llama_decode", totals)
    timed(batch_module.DecodeBatch, "_uniforms", "uniforms", totals)
    timed(batch_module, "sample_tokens", "sample_tokens", totals)
    timed(batch_module, "act_mixed", "policy", totals)
    chat = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    prompt = tuple(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
    print(f"# {cpu_description()}; batch {args.batch_size}, {args.steps} steps a run", flush=True)
    for _ in range(args.rounds):
        for spec in ("fixed:1.0", "learned"):
            batch = engine.new_batch()
            batch.score_actions = args.score_actions
            params = SamplingParams(max_new_tokens=args.steps + 1, policy=spec, seed=1, ignore_eos=True)
            batch.add([PromptRow(prompt, params, n=args.batch_size)])
            batch.step()  # the first step reads the prompt: not timed
            totals.clear()
            start, steps = time.perf_counter(), 0
            while batch.num_running and steps < args.steps:
                batch.step()
                steps += 1
            total = time.perf_counter() - start
            batch.cancel(batch.rows)
            parts = " | ".join(f"{k} {1000 * v / steps:.3f}" for k, v in totals.items())
            rest = 1000 * (total - sum(totals.values())) / steps
            print(f"{spec:10s} {1000 * total / steps:6.2f} ms/step | {parts} | rest {rest:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
