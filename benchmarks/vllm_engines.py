"""``introllm bench --vllm``: the vLLM backend with the learned head against vLLM's own default
sampling, and the torch engine beside both, at the same batch sizes, in one run.

- "vllm default": stock vLLM (its own model class, no logits processor) on the same weights,
  every request at temperature 1 — vLLM's default sampling;
- "vllm learned": ``VLLMEngine`` (hidden-state tap + temperature processor + trace read-back),
  every request on the learned policy;
- "torch learned": the in-process ``Engine`` on the learned policy.

Every configuration decodes the same chat prompts for exactly ``new_tokens`` tokens (EOS ignored),
prefill included, consuming tokens step by step as a streaming server does. Each configuration
lives in a process of its own (two vLLM engines in one process disturb each other's thread
binding), and only one runs at a time, in turn (A-B-C, then C-B-A, ...). The head's overhead is
the median over repeats of the paired ratio tokens/s(default) / tokens/s(learned) - 1, so slow
drifts of a noisy machine cancel; run to run it still moves by several percent here. So the
learned engine also times what the head adds (the processor inside vLLM's step and the trace
read-back after it): "hook overhead" = that time / the rest of the run, a measurement that the
machine's noise scales but does not swamp.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from introllm.sampler.checkpoint import HEAD_CONFIG, HEAD_WEIGHTS
from introllm.sampler.records import SamplingParams

from .engine import _prompt_ids


def head_free_view(checkpoint: Path, into: Path) -> Path:
    """A directory of links to the checkpoint's files minus the head's: what stock vLLM loads."""
    into.mkdir(parents=True, exist_ok=True)
    for f in checkpoint.iterdir():
        if f.name not in (HEAD_CONFIG, HEAD_WEIGHTS):
            (into / f.name).symlink_to(f.resolve())
    return into


def _stock_engine(path: Path, *, dtype: str, max_batch: int, eager: bool, kv_cache_gib: float):
    """vLLM as it comes, in this process like VLLMEngine (so only the head differs)."""
    import os

    from vllm.platforms import current_platform

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if dtype == "auto" and current_platform.device_type == "cpu":
        dtype = "float32"  # what VLLMEngine does
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    args = EngineArgs(
        model=str(path),
        dtype=dtype,
        max_num_seqs=max_batch,
        enforce_eager=eager,
        async_scheduling=False,
        kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)),
        disable_log_stats=True,
    )
    return LLMEngine.from_engine_args(args)


def _run_stock(llm, prompts: list[list[int]], new_tokens: int) -> None:
    from vllm import SamplingParams as VParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    # Token by token (DELTA), as a streaming server consumes them; the learned run does the same.
    params = VParams(
        max_tokens=new_tokens, temperature=1.0, ignore_eos=True, detokenize=False, output_kind=RequestOutputKind.DELTA
    )
    for i, ids in enumerate(prompts):
        llm.add_request(f"bench-{time.monotonic_ns()}-{i}", TokensPrompt(prompt_token_ids=ids), params)
    received = 0
    while llm.has_unfinished_requests():
        received += sum(len(out.outputs[0].token_ids) for out in llm.step())
    assert received == len(prompts) * new_tokens, received


def _serve_runs(kind: str, checkpoint: str | None, head: str | None, options: dict, conn) -> None:
    """A worker process: build one configuration, then time the batches the parent asks for.
    ``checkpoint`` None: the embedded model; ``head``: as ``--head`` (the same head on both backends)."""
    from introllm.sampler.engine import Engine
    from introllm.sampler.models import default_checkpoint, load_model
    from introllm.sampler.vllm_engine import load_vllm

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(checkpoint) if checkpoint else default_checkpoint()
        if kind == "torch learned":
            ck = load_model(checkpoint, "auto", "auto", head=head)
            engine = Engine(ck.model, ck.head)
            run = lambda prompts, n: engine.generate(prompts, SamplingParams(max_new_tokens=n, ignore_eos=True))
            dtype = str(ck.model.dtype).removeprefix("torch.")
        elif kind == "vllm default":
            stock = _stock_engine(head_free_view(path, Path(tmp) / "model"), **options)
            run = lambda prompts, n: _run_stock(stock, prompts, n)
            dtype = str(stock.vllm_config.model_config.dtype).removeprefix("torch.")
        else:
            ours = load_vllm(checkpoint, head, **options)
            run = lambda prompts, n: ours.generate(prompts, SamplingParams(max_new_tokens=n, ignore_eos=True))
            dtype = ours.dtype
        hooks = ours.hook_seconds if kind == "vllm learned" else (lambda: 0.0)
        conn.send(dtype)
        while (job := conn.recv()) is not None:
            prompts, new_tokens = job
            start, hooked = time.perf_counter(), hooks()
            run(prompts, new_tokens)
            conn.send((time.perf_counter() - start, hooks() - hooked))


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
    head: str | None = None,
    embedded: bool = False,
    on_measure: Callable[[str, int, float], None] | None = None,
) -> list[dict]:
    """Tokens/s per batch size and configuration; per batch size a dict with ``tokens_per_s``
    {name: [per repeat]}, ``median`` {name: tokens/s}, ``overhead`` (learned vs default vLLM,
    median of paired ratios) and the dtype each configuration ran in."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # vLLM and CUDA want fresh interpreters, not forks
    options = dict(dtype=dtype, max_batch=max(batch_sizes), eager=eager, kv_cache_gib=kv_cache_gib)
    names = (["torch learned"] if include_torch else []) + ["vllm default", "vllm learned"]
    workers, dtypes = {}, {}
    try:
        for name in names:  # one at a time: two vLLM compilations at once would only slow both
            parent, child = ctx.Pipe()
            where = None if embedded else str(checkpoint)
            proc = ctx.Process(target=_serve_runs, args=(name, where, head, options, child), daemon=True)
            proc.start()
            workers[name] = (proc, parent)
            dtypes[name] = parent.recv()
        results = []
        for b in batch_sizes:
            prompts = _prompt_ids(tokenizer, b)
            tps: dict[str, list[float]] = {name: [] for name in names}
            hook_share = []  # per learned run: time in the hooks / the rest of the run

            def timed(name: str) -> tuple[float, float]:
                workers[name][1].send((prompts, new_tokens))
                return workers[name][1].recv()

            for name in names:  # warm-up: first batches of this size
                timed(name)
            for r in range(repeats):
                for name in names if r % 2 == 0 else names[::-1]:
                    if name == "torch learned" and r >= 3:  # a guide, not a paired ratio: three runs
                        continue
                    seconds, hooked = timed(name)
                    tps[name].append(b * new_tokens / seconds)
                    if name == "vllm learned":
                        hook_share.append(hooked / (seconds - hooked))
                    if on_measure:
                        on_measure(name, b, tps[name][-1])
            results.append(
                {
                    "batch_size": b,
                    "new_tokens": new_tokens,
                    "tokens_per_s": tps,
                    "median": {name: statistics.median(v) for name, v in tps.items()},
                    "overhead": statistics.median(d / l for d, l in zip(tps["vllm default"], tps["vllm learned"]))
                    - 1.0,
                    "hook_overhead": statistics.median(hook_share),
                    "dtype": dtypes,
                }
            )
        return results
    finally:
        for proc, conn in workers.values():
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(30)
            if proc.is_alive():
                proc.kill()
