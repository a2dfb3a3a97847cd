"""``introllm bench --contexts 1k,2k,4k,8k``: the paper's Table 3 (efficiency profile, §5 and
Table 3 of the paper) for this code: per context length, decoding tokens/s with default sampling
(fixed temperature 1) and with the learned head on the same backend, the head's parameters and
their share of the model's ("Param. Δ"), and forward FLOPs per generated token with and without
the head.

Method. One sequence (batch 1, as a single user sees it) whose prompt fills the context up to
``context - new_tokens`` tokens (random token ids of a fixed generator: content does not change
the cost), then ``new_tokens`` tokens with EOS ignored. Throughput is the decode rate after the
first token, (new_tokens - 1) / time from the first token to the last; the prefill (and vLLM's
chunked prefill steps) is timed apart and reported in the JSON. Default and learned alternate
(A-B, B-A, ...) on one engine, after a warm-up of each; the median over repeats is shown. Each
backend runs in a process of its own (vLLM binds threads and sets torch's thread count per
process), one after the other.

"default" is the same engine with every request on ``fixed:1.0``: on the vLLM backend that is
vLLM's own temperature-1 sampling, the processor installed but given no rows, the tap a pointer
store. FLOPs are counted analytically from the model config (matrix products of a decode step at
the given context: 2 FLOPs per weight, plus attention's 4 · heads · head_dim · context per
layer), the head's as 2 FLOPs per head weight; element-wise work is left out on both sides.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from introllm.sampler.records import SamplingParams, prompt_rows

POLICIES = {"default": "fixed:1.0", "learned": "learned"}


def parse_contexts(text: str) -> list[int]:
    """ "1k,2k,4k" -> [1024, 2048, 4096]; plain numbers are tokens. ValueError on anything else."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        try:
            value = int(float(part[:-1]) * 1024) if part.endswith("k") else int(part)
        except ValueError:
            raise ValueError(f"--contexts takes comma-separated token counts like 1k,2k,4096; got {part!r}") from None
        if value < 2:
            raise ValueError(f"a context must be at least 2 tokens, got {part!r}")
        out.append(value)
    if not out:
        raise ValueError("--contexts is empty")
    return out


# --------------------------------------------------------------------------- counting


def _dims(cfg) -> dict[str, int]:
    d = cfg.hidden_size
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    return dict(
        d=d,
        layers=cfg.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        inter=cfg.intermediate_size,
        vocab=cfg.vocab_size,
    )


def matmul_params(cfg) -> dict[str, int]:
    """Weights of a Llama/Qwen-style decoder by role (norms and biases left out): ``layers`` (the
    projections of every block), ``lm_head`` (vocab x d) and ``embedding`` (vocab x d; the same
    tensor as lm_head when ``tie_word_embeddings``)."""
    k = _dims(cfg)
    attn = k["d"] * k["head_dim"] * (2 * k["heads"] + 2 * k["kv_heads"])  # q, o; k, v
    mlp = 3 * k["d"] * k["inter"]  # gate, up, down
    return {"layers": k["layers"] * (attn + mlp), "lm_head": k["vocab"] * k["d"], "embedding": k["vocab"] * k["d"]}


def decode_flops_per_token(cfg, context: int) -> float:
    """Forward FLOPs to generate one token with ``context`` tokens in the KV cache: 2 per weight
    of every matrix product (blocks and LM head; the embedding is a lookup) plus attention's
    QK^T and AV, 2 · 2 · heads · head_dim · context per layer."""
    k = _dims(cfg)
    w = matmul_params(cfg)
    return 2.0 * (w["layers"] + w["lm_head"]) + 4.0 * k["layers"] * k["heads"] * k["head_dim"] * context


def head_params(head) -> int:
    return sum(p.numel() for p in head.parameters())


def head_flops_per_token(head) -> float:
    """2 FLOPs per weight of the head's matrices (its MLP d -> d/2 -> 3)."""
    return 2.0 * sum(p.numel() for p in head.parameters() if p.dim() == 2)


def model_params(cfg) -> int:
    """All parameters of the decoder, counted from its config: the matrices, the norms (two per
    block and a final one; Qwen3's q/k norms too) and the LM head when it is not tied."""
    k = _dims(cfg)
    w = matmul_params(cfg)
    norms = k["layers"] * 2 * k["d"] + k["d"]
    if getattr(cfg, "model_type", "") == "qwen3":
        norms += k["layers"] * 2 * k["head_dim"]
    biases = (
        k["layers"] * k["head_dim"] * (k["heads"] + 2 * k["kv_heads"]) if getattr(cfg, "attention_bias", False) else 0
    )
    tied = getattr(cfg, "tie_word_embeddings", False)
    return w["layers"] + w["embedding"] + (0 if tied else w["lm_head"]) + norms + biases


# --------------------------------------------------------------------------- measuring


def decode_once(engine, prompt: list[int], policy: str, new_tokens: int, seed: int) -> tuple[float, float]:
    """(prefill seconds, decode tokens/s) of one sequence on ``engine`` (an Engine or a
    VLLMEngine: both give a batch with add / step / num_running)."""
    batch = engine.new_batch()
    start = time.perf_counter()  # the torch engine prefills inside add, vLLM in its first steps
    [[seq]] = batch.add(
        prompt_rows([prompt], SamplingParams(max_new_tokens=new_tokens, policy=policy, seed=seed, ignore_eos=True))
    )
    while not seq.token_ids:
        batch.step()
    first = time.perf_counter()
    while batch.num_running:
        batch.step()
    end = time.perf_counter()
    if len(seq.token_ids) != new_tokens:
        raise RuntimeError(f"asked for {new_tokens} tokens, got {len(seq.token_ids)} ({seq.finish_reason})")
    return first - start, (new_tokens - 1) / (end - first)


@dataclass
class ContextResult:
    backend: str
    context: int
    prompt_tokens: int
    new_tokens: int
    tokens_per_s: dict[str, list[float]] = field(default_factory=dict)
    prefill_s: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.tokens_per_s[name])


CPU_THREADS = 1
"""torch threads of each benchmark process on a CPU. vLLM's CPU worker runs with one here (it logs
"Reducing Torch threads from 2 to 1 for serving"), so the torch engine gets the same. On these
shared 2-core machines, with other jobs running, two OpenMP threads made the torch engine's decode
steps ~20x slower than one (5-6 s against 0.22-0.25 s a step at a 1k context, measured while the
load average was ~10): each small op waits for a descheduled thread."""


def _build(backend: str, checkpoint: str, options: dict):
    """(engine, model config, head, dtype) for ``backend``: torch, torch-compiled (the compiled
    static-shape decode step, its KV cache sized to ``options["max_len"]``, one slot) or vllm."""
    if backend in ("torch", "torch-compiled"):
        import torch

        from introllm.sampler.compiled import CompileConfig
        from introllm.sampler.engine import Engine
        from introllm.sampler.models import load_model, resolve_device

        if resolve_device(options.get("device", "auto")).type == "cpu":
            torch.set_num_threads(CPU_THREADS)
        ck = load_model(checkpoint, options.get("device", "auto"), options.get("dtype", "auto"))
        compile = None
        if backend == "torch-compiled":
            compile = CompileConfig(max_len=options.get("max_len", 2048), max_slots=1)
        engine = Engine(ck.model, ck.head, compile=compile)
        return engine, ck.model.config, ck.head, str(ck.model.dtype).removeprefix("torch.")
    from introllm.sampler.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        checkpoint,
        dtype=options.get("dtype", "auto"),
        max_batch=1,
        eager=options.get("eager", False),
        kv_cache_gib=options.get("kv_cache_gib"),
        engine_args=options.get("engine_args"),
    )
    cfg = engine.llm.vllm_config.model_config.hf_config
    return engine, cfg, engine.head, engine.dtype


def run_backend(
    backend: str,
    checkpoint: str,
    contexts: list[int],
    new_tokens: int,
    repeats: int,
    options: dict,
    on_measure: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Table 3 on one backend, in this process: a dict with the rows (ContextResult as dicts),
    the head's size and share, FLOPs per token, dtype and, for vLLM, the model runner."""
    import torch

    engine, cfg, head, dtype = _build(backend, checkpoint, options)
    if head is None:
        raise ValueError(
            f"{checkpoint} has no temperature head: Table 3 compares the learned head with default sampling"
        )
    limit = getattr(engine, "max_context", None) or getattr(cfg, "max_position_embeddings", None)
    g = torch.Generator().manual_seed(0)
    vocab = min(cfg.vocab_size, 32000)  # ids every tokenizer of these models knows
    say = on_measure or (lambda _: None)
    for name, policy in POLICIES.items():  # warm-up: compile, allocate, first steps
        decode_once(engine, torch.randint(vocab, (64,), generator=g).tolist(), policy, 8, seed=1)
    rows = []
    for context in contexts:
        if limit is not None and context > limit:
            say(f"{backend}: {context} tokens exceed the model's context ({limit}); skipped")
            continue
        prompt = torch.randint(vocab, (context - new_tokens,), generator=g).tolist()
        row = ContextResult(
            backend, context, len(prompt), new_tokens, {k: [] for k in POLICIES}, {k: [] for k in POLICIES}
        )
        for r in range(repeats):
            for name in list(POLICIES) if r % 2 == 0 else list(POLICIES)[::-1]:
                prefill, rate = decode_once(engine, prompt, POLICIES[name], new_tokens, seed=r)
                row.tokens_per_s[name].append(rate)
                row.prefill_s[name].append(prefill)
                say(f"{backend:<5} context {context:>6}  {name:<8} {rate:8.2f} tok/s  (prefill {prefill:6.2f} s)")
        rows.append(asdict(row))
    h_params, m_params = head_params(head), model_params(cfg)
    return {
        "backend": backend,
        "runner": getattr(engine, "runner", None),
        "dtype": dtype,
        "rows": rows,
        "model_params": m_params,
        "head_params": h_params,
        "head_share": h_params / m_params,
        "flops_per_token": {str(c): decode_flops_per_token(cfg, c) for c in contexts},
        "head_flops_per_token": head_flops_per_token(head),
    }


def _worker(backend, checkpoint, contexts, new_tokens, repeats, options, conn) -> None:
    try:
        conn.send(
            (
                "ok",
                run_backend(
                    backend,
                    checkpoint,
                    contexts,
                    new_tokens,
                    repeats,
                    options,
                    on_measure=lambda line: conn.send(("line", line)),
                ),
            )
        )
    except Exception as e:  # reported by the parent, which exits with a one-line error
        conn.send(("error", f"{backend}: {type(e).__name__}: {e}"))


def run_context_bench(
    checkpoint: str | Path,
    backends: list[str],
    contexts: list[int],
    *,
    new_tokens: int = 32,
    repeats: int = 2,
    options: dict | None = None,
    on_measure: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``run_backend`` for each backend, each in a fresh spawned process, in turn."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = []
    for backend in backends:
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_worker,
            args=(backend, str(checkpoint), contexts, new_tokens, repeats, options or {}, child),
            daemon=True,
        )
        proc.start()
        try:
            while True:
                if not parent.poll(1.0):
                    if not proc.is_alive():
                        raise RuntimeError(f"the {backend} benchmark process died (exit code {proc.exitcode})")
                    continue
                kind, payload = parent.recv()
                if kind == "line":
                    on_measure and on_measure(payload)
                elif kind == "error":
                    raise RuntimeError(payload)
                else:
                    out.append(payload)
                    break
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
            with contextlib.suppress(OSError):
                parent.close()
    return out


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of Table 3 as the paper lays it out (metric, method, Param. Δ, one column per
    context), per backend."""
    rows = []
    for res in results:
        share = f"+{res['head_share'] * 100:.3f} %"
        contexts = [r["context"] for r in res["rows"]]
        flops = res["flops_per_token"]
        rows.append([f"FLOPs/token ({res['backend']})", "default", "–", *[f"{flops[str(c)]:.3e}" for c in contexts]])
        rows.append(["", "learned", share, *[f"{flops[str(c)] + res['head_flops_per_token']:.3e}" for c in contexts]])
        for name, delta in (("default", "–"), ("learned", share)):
            rows.append(
                [
                    f"tokens/s ({res['backend']})" if name == "default" else "",
                    name,
                    delta,
                    *[f"{statistics.median(r['tokens_per_s'][name]):.2f}" for r in res["rows"]],
                ]
            )
        overhead = [
            statistics.median(d / l for d, l in zip(r["tokens_per_s"]["default"], r["tokens_per_s"]["learned"])) - 1
            for r in res["rows"]
        ]
        rows.append(["", "overhead", "", *[f"{o * 100:+.1f} %" for o in overhead]])
    return rows
