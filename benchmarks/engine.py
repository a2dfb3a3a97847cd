"""``introllm bench``: engine throughput with the learned policy, with a fixed temperature, and
Hugging Face ``generate``, measured side by side in one run.

"engine learned, HF forward" is the engine with its two speed-ups off (the fused decode step and
packed CPU kernels): the model's own forward inside our loop. Every configuration decodes the same prompts (distinct chat prompts, one per row) for exactly
``new_tokens`` tokens (EOS ignored), so tokens/s compare like for like; prefill is included in
the time. Configurations are interleaved within each repeat and the median over repeats is
reported, because these machines are noisy: compare ratios from one run, not across runs.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from introllm.sampler.engine import Engine, SamplingParams
from introllm.sampler.records import prompt_rows

log = logging.getLogger(__name__)

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue to a ten-year-old.",
    "List five ideas for a weekend trip in the mountains.",
    "What are the main differences between cats and dogs as pets?",
    "Describe how a bicycle works, step by step.",
    "Give me a recipe for a simple tomato soup.",
    "Why do we have seasons on Earth?",
    "Write a poem about the ocean at night.",
]


@dataclass
class BenchResult:
    batch_size: int
    new_tokens: int
    tokens_per_s: dict[str, list[float]] = field(default_factory=dict)
    overhead: dict[str, float] = field(default_factory=dict)
    """The learned policy's step cost against fixed:1.0, from paired steps (see step_overhead)."""
    compile_seconds: float = 0.0
    """Time the compiled engine spent compiling this batch size's graphs (its warm-up run)."""

    def median(self, name: str) -> float:
        return statistics.median(self.tokens_per_s[name])


def _prompt_ids(tokenizer, batch_size: int) -> list[list[int]]:
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]
    if getattr(tokenizer, "chat_template", None):
        return [
            list(
                tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True)["input_ids"]
            )
            for t in texts
        ]
    return [tokenizer(t)["input_ids"] for t in texts]


def _hf_generate(model, prompts: list[list[int]], new_tokens: int, pad_id: int) -> None:
    length = max(map(len, prompts))
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, length - len(p) :] = torch.tensor(p)
        mask[i, length - len(p) :] = 1
    device = next(model.parameters()).device
    with torch.inference_mode():
        model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad_id,
        )


def step_overhead(
    engine: Engine, prompts: list[list[int]], policy: str, baseline: str, steps: int = 128
) -> dict[str, float]:
    """Decode-step cost of ``policy`` relative to ``baseline``, measured on paired steps.

    Whole-run timings drift with the machine's load over tens of seconds. Here one batch per
    policy is stepped in turn (A-B, then B-A, ...), each pair of consecutive steps gives a ratio
    t_policy / t_baseline under the same load, and the median ratio is reported with the median
    step times. Returns {"policy_ms", "baseline_ms", "overhead"} (overhead = median ratio - 1).
    """
    batches = {}
    for spec in (policy, baseline):
        batch = engine.new_batch()
        batch.add(prompt_rows(prompts, SamplingParams(max_new_tokens=steps + 4, policy=spec, seed=0, ignore_eos=True)))
        batch.step()  # first step: packing, allocations
        batches[spec] = batch
    times: dict[str, list[float]] = {policy: [], baseline: []}
    for i in range(steps):
        for spec in (policy, baseline) if i % 2 == 0 else (baseline, policy):
            start = time.perf_counter()
            batches[spec].step()
            times[spec].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times[policy], times[baseline])]
    return {
        "policy_ms": 1000 * statistics.median(times[policy]),
        "baseline_ms": 1000 * statistics.median(times[baseline]),
        "overhead": statistics.median(ratios) - 1.0,
    }


def run_bench(
    engine: Engine,
    tokenizer,
    batch_sizes: list[int],
    new_tokens: int = 128,
    repeats: int = 3,
    include_generate: bool = True,
    include_plain: bool = True,
    on_measure: Callable[[str, int, float], None] | None = None,
    compiled: Engine | None = None,
) -> list[BenchResult]:
    """Measure tokens/s for each batch size and configuration, interleaved, ``repeats`` times.
    ``compiled``: the same model behind a compiled engine (``Engine(..., compile=...)``), measured
    beside the eager one after a warm-up run that compiles its graphs (timed into compile_seconds)."""
    model = getattr(engine, "model", None)  # None: an engine without a torch model (llama.cpp)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results = []
    for batch_size in batch_sizes:
        prompts = _prompt_ids(tokenizer, batch_size)
        configs: dict[str, Callable[[], None]] = {}

        def engine_run(policy: str, fast: bool = True) -> Callable[[], None]:
            def run() -> None:
                engine.fast_cpu_kernels = engine.fused_decode = fast
                try:
                    engine.generate(
                        prompts, SamplingParams(max_new_tokens=new_tokens, policy=policy, seed=0, ignore_eos=True)
                    )
                finally:
                    engine.fast_cpu_kernels = engine.fused_decode = True

            return run

        configs["engine learned"] = engine_run("learned")
        configs["engine fixed:1.0"] = engine_run("fixed:1.0")
        if include_plain:
            configs["engine learned, HF forward"] = engine_run("learned", fast=False)
        if include_generate:
            configs["HF generate"] = lambda: _hf_generate(model, prompts, new_tokens, pad_id)
        result = BenchResult(batch_size, new_tokens, {})
        if compiled is not None:
            for policy in ("learned", "fixed:1.0"):
                configs[f"compiled {policy}"] = (
                    lambda p: (
                        lambda: compiled.generate(
                            prompts, SamplingParams(max_new_tokens=new_tokens, policy=p, seed=0, ignore_eos=True)
                        )
                    )
                )(policy)
            before = compiled.compiled.compile_seconds
            configs["compiled learned"]()  # warm-up: every graph this batch size's run needs
            result.compile_seconds = compiled.compiled.compile_seconds - before
            if on_measure:
                on_measure("compile seconds", batch_size, result.compile_seconds)
        result.tokens_per_s = {name: [] for name in configs}
        engine.generate(prompts[:1], SamplingParams(max_new_tokens=4, seed=0))  # warm-up (packing, allocators)
        for _ in range(repeats):
            for name, run in configs.items():
                cuda = model is not None and next(model.parameters()).is_cuda
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run()
                if cuda:
                    torch.cuda.synchronize()
                tps = batch_size * new_tokens / (time.perf_counter() - start)
                result.tokens_per_s[name].append(tps)
                if on_measure:
                    on_measure(name, batch_size, tps)
        result.overhead = step_overhead(engine, prompts, "learned", "fixed:1.0")
        if on_measure:
            on_measure("step ms, learned (paired)", batch_size, result.overhead["policy_ms"])
            on_measure("step ms, fixed:1.0 (paired)", batch_size, result.overhead["baseline_ms"])
        results.append(result)
    return results
