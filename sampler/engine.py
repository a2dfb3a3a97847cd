"""Batched, KV-cached decoding with a temperature policy in the loop.

Per step and per sequence (DESIGN.md, data flow):

    forward -> final hidden state h_t -> policy -> tau_t (and c_t, z_t) -> logits / tau_t -> sample y_t

The engine takes token ids and returns token ids with one record per generated token; it knows
nothing of tokenizers or HTTP. ``Engine.generate`` runs a fixed set of prompts to completion (the
trainer's rollouts, the CLI). ``DecodeBatch`` is the step-level interface underneath it: sequences
can join (``add``) and leave (``cancel``) between steps, which is what the server's continuous
batching uses.

Sampling is exact inverse-CDF sampling from softmax(logits / tau) (optionally top-k / top-p
filtered, after the temperature) with counter-based random numbers (see rng), so a sequence's
tokens depend only on its seed, never on its batch neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch
from torch import Tensor, nn

from . import fastpath
from .batch import DecodeBatch
from .compiled import CompileConfig, CompiledBatch, CompiledSteps
from .head import TemperatureHead
from .kernels import Projection
from .policies import PolicyCache, TemperaturePolicy
from .records import SamplingParams, Sequence, prompt_rows

log = logging.getLogger(__name__)


def _unsupported_reason(config) -> str | None:
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(text_config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return f"layer types {sorted(set(layer_types))} (only full attention is supported)"
    if getattr(text_config, "final_logit_softcapping", None):
        return "final logit soft-capping"
    if getattr(text_config, "logit_scale", None) not in (None, 1, 1.0):
        return "a logit scale"
    return None


class Engine:
    """Decoding for a Hugging Face causal LM plus (optionally) its temperature head.

    ``fused_decode`` runs decode steps of Llama-family models through ``fastpath.FusedDecoder``
    (fused projections, one RoPE and mask per step); other models, and prefill, use the model's
    own forward. ``fast_cpu_kernels`` packs linear weights for oneDNN when decoding on CPU in
    float32, or in bfloat16 on CPUs with native bfloat16 (see kernels). Both agree with the plain
    forward to float rounding; turn them off to decode through the untouched Hugging Face forward.
    ``compile`` (a ``compiled.CompileConfig``) decodes through a compiled static-shape step
    instead (CUDA graphs on a GPU); the context is then at most its ``max_len``.
    """

    def __init__(
        self,
        model: nn.Module,
        head: TemperatureHead | None = None,
        *,
        fused_decode: bool = True,
        fast_cpu_kernels: bool = True,
        compile: CompileConfig | None = None,
    ):
        reason = _unsupported_reason(model.config)
        if reason:
            raise NotImplementedError(f"the engine does not support {model.config.model_type} models with {reason}")
        self.model = model
        self.decoder = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.head = head
        self.fast_cpu_kernels = fast_cpu_kernels
        self.fused_decode = fused_decode
        self.fused = None
        if fused_decode:
            why_not = fastpath.unsupported_reason(model)
            if why_not is None:
                self.fused = fastpath.FusedDecoder(model)
            else:
                log.info("decoding through the model's own forward: %s", why_not)
        self.num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.vocab_size = self.lm_head.weight.shape[0]
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.eos_token_ids = _eos_ids(model)
        self._policies = PolicyCache()
        self._output: Projection | None = None
        self._output_packed = fast_cpu_kernels
        self.compiled: CompiledSteps | None = None
        if compile is not None:
            why_not = fastpath.unsupported_reason(model)
            if why_not:
                raise NotImplementedError(f"--compile serves Llama-family models only: {why_not}")
            self.compiled = CompiledSteps(model, head, compile)
            self.max_context = min(self.max_context, compile.max_len)

    def logits(self, h: Tensor) -> Tensor:
        """Output projection of final hidden states h [B, d] -> float32 [B, V]."""
        if not isinstance(self.lm_head, nn.Linear):
            return self.lm_head(h).float()
        if self._output is None or self._output.stale() or self._output_packed != self.fast_cpu_kernels:
            self._output = Projection([self.lm_head], packed=self.fast_cpu_kernels)
            self._output_packed = self.fast_cpu_kernels
        return self._output(h).float()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def policy(self, spec: str) -> TemperaturePolicy:
        """The policy object for ``spec``, shared by the requests that name it."""
        return self._policies.get(spec, self.head)

    def new_batch(self) -> DecodeBatch:
        """An empty running batch: the compiled one (static slots) when the engine was built with
        ``compile``, else the eager one."""
        return CompiledBatch(self) if self.compiled is not None else DecodeBatch(self)

    def generate(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams | Seq[SamplingParams] = SamplingParams(),
        n: int = 1,
        on_step: Callable[[list[Sequence]], None] | None = None,
    ) -> list[list[Sequence]]:
        """Decode every prompt n times. Returns, per prompt, its n finished sequences.

        ``params`` is one SamplingParams for all prompts or one per prompt. Prompts are prefilled
        once each and their KV cache shared by the n samples. ``on_step`` sees the sequences that
        got a token at each step (progress bars, streaming).
        """
        return run_to_completion(self.new_batch(), prompts, params, n, on_step)


def run_to_completion(batch, prompts, params, n, on_step=None) -> list[list[Sequence]]:
    """Decode every prompt n times in ``batch`` (a DecodeBatch or a VLLMBatch) until all finish."""
    out = batch.add(prompt_rows(prompts, params, n))
    while batch.num_running:
        stepped = batch.step()
        if on_step is not None:
            on_step(stepped)
    return out


def _eos_ids(model: nn.Module) -> frozenset[int]:
    ids: set[int] = set()
    for cfg in (getattr(model, "generation_config", None), model.config):
        value = getattr(cfg, "eos_token_id", None)
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return frozenset(int(i) for i in ids)
