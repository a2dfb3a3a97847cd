"""Training rollouts on a colocated vLLM engine (TRL's "colocate" mode, verl's hybrid engine).

Each training process holds one in-process ``VLLMEngine`` beside the model it trains. The engine
samples the G completions of the process's prompts with the method's temperature policy; its
temperature head *is* the trainer's head module (``VLLMEngine(head=...)``), so a head update is
seen by the next rollout with nothing to copy. The model's weights live twice (vLLM's fused,
kernel-format copy and the trainer's): after each optimizer step ``sync`` pushes the trainer's
new weights into vLLM in place (``VLLMEngine.load_weights``: vLLM's public reload path, no disk
round trip). The trainer then scores the recorded tokens under the recorded tau itself and
compares its log-probs with vLLM's (``update``: logp_mismatch*, truncated importance sampling).

The rollout backend is chosen by ``resolve_rollout_backend``; ``build_rollout_engine`` returns the
engine (``GenerationEngine``) and the sync to call after each optimizer step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from introllm.sampler import Engine, GenerationEngine
from introllm.sampler.backends import VLLM_INSTALL, choose_backend, vllm_installed
from introllm.sampler.compiled import CompileConfig

from .config import ConfigError, RolloutConfig

log = logging.getLogger(__name__)


def resolve_rollout_backend(name: str, device: torch.device) -> tuple[str, str]:
    """("torch" or "vllm", why) for the [rollout] rollout_backend ``name`` (torch, vllm, auto), as
    ``sampler.backends.choose_backend`` decides for serving. Raises ConfigError for vllm without vLLM."""
    if name == "vllm" and not vllm_installed():
        raise ConfigError(f"rollout_backend: vllm needs vLLM: {VLLM_INSTALL}")
    backend, why = choose_backend(name, cuda=device.type == "cuda")
    return backend, why.replace("--backend ", "rollout_backend ")


class VLLMRollouts:
    """A colocated vLLM engine that samples with the trainer's head and takes its weights.

    checkpoint: the directory the trainer's model was loaded from (vLLM reads its config,
    tokenizer and initial weights there). model: the trainer's (unwrapped) Hugging Face model;
    head: the trainer's TemperatureHead (shared, not copied). memory: vLLM's share of the device
    memory (GPU: ``gpu_memory_utilization``; CPU: that share of the memory available now for the
    KV cache, at most 4 GiB). dtype: vLLM's precision ("auto", "float32", "bfloat16"); it may differ
    from the trainer's (the sync casts each tensor as vLLM's weight loaders copy it). eager: skip
    torch.compile / CUDA graphs (the weight sync is verified both ways on CPU, not under CUDA
    graphs). max_batch: vLLM's max_num_seqs. engine_args: further vLLM EngineArgs.

    Satisfies ``GenerationEngine`` (policy, new_batch, generate delegate to the vLLM engine).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        model: nn.Module,
        head: nn.Module | None,
        *,
        memory: float,
        dtype: str,
        eager: bool = False,
        max_batch: int = 64,
        engine_args: dict | None = None,
    ):
        import os

        from vllm.platforms import current_platform

        from introllm.sampler.vllm_engine import VLLMEngine, kv_cache_bytes

        # vLLM's CPU worker drops torch to one thread "for serving" unless OMP_NUM_THREADS is set
        # (vllm/utils/torch_utils.py) and then forbids torch.set_num_threads; in a colocated
        # trainer that would halve the update's speed on two cores. Keep the trainer's threads.
        if current_platform.device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
            log.info(
                "OMP_NUM_THREADS=%s (the trainer's torch threads), so that vLLM keeps them",
                os.environ["OMP_NUM_THREADS"],
            )
        self.model = model
        extra = dict(engine_args or {})
        kv_gib = None
        if current_platform.device_type == "cpu":
            # the processes of one machine share its memory (torchrun sets LOCAL_WORLD_SIZE)
            local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
            size = kv_cache_bytes(None, "cpu", extra, share=memory, processes=local)
            kv_gib = None if size is None else size / (1 << 30)
        else:
            extra.setdefault("gpu_memory_utilization", memory)
        self.engine = VLLMEngine(
            checkpoint,
            dtype=dtype,
            max_batch=max_batch,
            eager=eager,
            kv_cache_gib=kv_gib,
            engine_args=extra,
            head=head,
            record_logprobs=True,
        )
        self.sync_seconds: list[float] = []

    def sync(self) -> float:
        """Push the trainer's current model weights into vLLM in place; returns seconds."""
        seconds = self.engine.load_weights(self.model.named_parameters())
        self.sync_seconds.append(seconds)
        return seconds

    # GenerationEngine
    def policy(self, spec: str):
        return self.engine.policy(spec)

    def new_batch(self):
        return self.engine.new_batch()

    def generate(self, *args, **kwargs):
        return self.engine.generate(*args, **kwargs)


def build_rollout_engine(
    cfg: RolloutConfig,
    *,
    checkpoint: Path,
    model: nn.Module,
    head: nn.Module | None,
    device: torch.device,
    dtype: str,
    model_trains: bool,
    max_batch: int,
    world: int = 1,
) -> tuple[GenerationEngine, Callable[[], float], str]:
    """(engine, sync, backend): the rollout engine of a training process and what to call after
    each optimizer step (returns seconds spent; 0 when nothing needs copying: the torch engine
    reads the trainer's own tensors, and a frozen base does not change). ``dtype`` is the training
    precision (run.dtype); vLLM's is ``cfg.vllm_dtype``, where "same" means ``dtype``.

    Under several processes (``world`` > 1, launched by ``accelerate launch`` / torchrun) each
    process gets its own engine through vLLM's ``external_launcher`` executor (data-parallel
    rollouts, as TRL's colocate mode): vLLM joins the trainer's process group (RANK, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT from the launcher) with a tensor-parallel group of one process each,
    instead of starting a one-process group of its own that would collide with it.
    Raises ConfigError when vllm is asked for and vLLM is not installed."""
    backend, why = resolve_rollout_backend(cfg.rollout_backend, device)
    log.info("rollouts on the %s engine (%s)", backend, why)
    if backend == "torch":
        compile = CompileConfig(max_len=cfg.compile_max_len, max_slots=max_batch) if cfg.compile else None
        return Engine(model, head, compile=compile), (lambda: 0.0), backend
    if cfg.compile:
        raise ConfigError("compile: applies to torch rollouts; vLLM compiles its own step (vllm_eager turns it off)")
    engine_args = {"distributed_executor_backend": "external_launcher"} if world > 1 else None
    vllm_dtype = dtype if cfg.vllm_dtype == "same" else cfg.vllm_dtype
    rollouts = VLLMRollouts(
        checkpoint,
        model,
        head,
        memory=cfg.vllm_memory,
        dtype=vllm_dtype,
        eager=cfg.vllm_eager,
        max_batch=max_batch,
        engine_args=engine_args,
    )
    log.info("vLLM rollouts in %s (vllm_dtype %s), training in %s", rollouts.engine.dtype, cfg.vllm_dtype, dtype)
    return rollouts, (rollouts.sync if model_trains else (lambda: 0.0)), backend
