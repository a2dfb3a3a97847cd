"""``introllm bench --vllm``: the vLLM backend with the learned head against vLLM's own default
sampling, and the torch engine beside both, at the same batch sizes, in one run.

- "vllm default": stock vLLM (its own model class, no logits processor) on the same weights,
  every request at temperature 1 — vLLM's default sampling;
- "vllm learned": ``VLLMEngine`` (hidden-state tap + temperature processor + trace read-back),
  every request on the learned policy;
- "torch learned": the in-process ``Engine`` on the learned policy.

Every configuration decodes the same chat prompts for exactly ``new_tokens`` tokens (EOS ignored),
prefill included. The two vLLM engines live in this process and run alternately (A-B, then B-A);
the overhead is the median over repeats of the paired ratio tokens/s(default) / tokens/s(learned)
- 1, so slow drifts of a noisy machine cancel. The torch engine runs first, before vLLM sets this
process's torch threads to 1 for serving; compare its figures as a guide, not to 1 %.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from .bench import _prompt_ids
from .checkpoint import HEAD_CONFIG, HEAD_WEIGHTS
from .records import SamplingParams


def head_free_view(checkpoint: Path, into: Path) -> Path:
    """A directory of links to the checkpoint's files minus the head's: what stock vLLM loads."""
    into.mkdir(parents=True, exist_ok=True)
    for f in checkpoint.iterdir():
        if f.name not in (HEAD_CONFIG, HEAD_WEIGHTS):
            (into / f.name).symlink_to(f.resolve())
    return into


def _stock_engine(path: Path, *, dtype: str, max_batch: int, eager: bool, kv_cache_gib: float):
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    args = EngineArgs(model=str(path), dtype=dtype, max_num_seqs=max_batch, enforce_eager=eager, async_scheduling=False,
                      kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)), disable_log_stats=True)
    return LLMEngine.from_engine_args(args)


def _run_stock(llm, prompts: list[list[int]], new_tokens: int) -> None:
    from vllm import SamplingParams as VParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    # Token by token (DELTA), as a streaming server consumes them; the learned run does the same.
    params = VParams(max_tokens=new_tokens, temperature=1.0, ignore_eos=True, detokenize=False,
                     output_kind=RequestOutputKind.DELTA)
    for i, ids in enumerate(prompts):
        llm.add_request(f"bench-{time.monotonic_ns()}-{i}", TokensPrompt(prompt_token_ids=ids), params)
    received = 0
    while llm.has_unfinished_requests():
        received += sum(len(out.outputs[0].token_ids) for out in llm.step())
    assert received == len(prompts) * new_tokens, received


def run_vllm_bench(
    checkpoint: Path,
    tokenizer,
    batch_sizes: list[int],
    new_tokens: int = 128,
    repeats: int = 5,
    *,
    dtype: str = "auto",
    eager: bool = False,
    kv_cache_gib: float = 2.0,
    include_torch: bool = True,
    on_measure: Callable[[str, int, float], None] | None = None,
) -> list[dict]:
    """Tokens/s per batch size and configuration; per batch size a dict with ``tokens_per_s``
    {name: [per repeat]}, ``median`` {name: tokens/s} and ``overhead`` (learned vs default vLLM,
    median of paired ratios)."""
    results = {b: {"batch_size": b, "new_tokens": new_tokens, "tokens_per_s": {}} for b in batch_sizes}
    prompts = {b: _prompt_ids(tokenizer, b) for b in batch_sizes}

    def record(name: str, b: int, seconds: float) -> float:
        tps = b * new_tokens / seconds
        results[b]["tokens_per_s"].setdefault(name, []).append(tps)
        if on_measure:
            on_measure(name, b, tps)
        return tps

    if include_torch:
        from .engine import Engine
        from .models import load_model

        ck = load_model(checkpoint, "auto", "auto")
        engine = Engine(ck.model, ck.head)
        for b in batch_sizes:
            engine.generate(prompts[b][:1], SamplingParams(max_new_tokens=4, seed=0))  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                engine.generate(prompts[b], SamplingParams(max_new_tokens=new_tokens, seed=0, ignore_eos=True))
                record("torch learned", b, time.perf_counter() - start)
        del engine, ck
        gc.collect()

    from .vllm_engine import VLLMEngine

    max_batch = max(batch_sizes)
    with tempfile.TemporaryDirectory() as tmp:
        stock = _stock_engine(head_free_view(checkpoint, Path(tmp) / "model"), dtype=dtype, max_batch=max_batch, eager=eager,
                              kv_cache_gib=kv_cache_gib)
        ours = VLLMEngine(checkpoint, dtype=dtype, max_batch=max_batch, eager=eager, kv_cache_gib=kv_cache_gib)
        learned = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
        runs = {
            "vllm default": lambda b: _run_stock(stock, prompts[b], new_tokens),
            "vllm learned": lambda b: ours.generate(prompts[b], learned),
        }
        for b in batch_sizes:
            for run in runs.values():  # warm-up: first batches of this size
                run(b)
            for r in range(repeats):
                for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                    start = time.perf_counter()
                    runs[name](b)
                    record(name, b, time.perf_counter() - start)
        dtype_used = ours.dtype
    out = []
    for b in batch_sizes:
        res = results[b]
        tps = res["tokens_per_s"]
        res["median"] = {name: statistics.median(v) for name, v in tps.items()}
        res["overhead"] = statistics.median(d / l for d, l in zip(tps["vllm default"], tps["vllm learned"])) - 1.0
        res["vllm_dtype"] = dtype_used
        out.append(res)
    return out
