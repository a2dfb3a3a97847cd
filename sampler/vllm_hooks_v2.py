"""The temperature processor for vLLM's Model Runner V2 (``vllm/v1/worker/gpu/model_runner.py``),
which vLLM 0.32 runs by default on GPUs with Triton. Same policies, same request states, same
counter-based uniforms and same hidden-state tap as the V1 processor in ``vllm_hooks``; only the
bookkeeping of which logits row is which request differs.

V2's interface (``vllm/v1/worker/gpu/sample/logits_processor/interface.py``) differs from V1's:

- A **slot** (``req_idx``, an index into the runner's per-request buffers) is what a request holds
  from admission to its end. ``add_request(req_idx, sampling_params)`` says who holds it now; there
  is no removal call: slots go back to a free list and the next ``add_request`` for that slot
  replaces (or, for a request without IntroLLM state, clears) what was there.
- A **logits row** is not a request: the batch is re-sorted every step, and
  ``LogitsContext.idx_mapping_np[row]`` names the slot of each row (without speculative decoding
  there is exactly one row per scheduled request, in batch order).
- ``apply(logits, ctx)`` runs before vLLM's temperature, min_p and top-k/top-p. Our requests get
  vLLM temperature 1, so dividing by tau here and then by 1 gives the torch engine's order
  (tau, then the filters), as in V1.
- The **step** of a row is read on the host, without a device sync: ``seq_lens_upper_bound_np[row]``
  (exact when there is no speculative decoding; asynchronous scheduling, under which it is only an
  upper bound, is off in this backend) minus the slot's ``prompt_len``. A row whose sequence length
  is below the slot's ``prefill_len`` belongs to a prompt chunk that is not the last: vLLM discards
  its token (``get_num_sampled_and_rejected``), so no decision is made there.

Hidden states and logits rows stay aligned in V2 as in V1: ``GPUModelRunner.sample`` computes
``self.model.compute_logits(hidden_states[input_batch.logits_indices])`` outside the CUDA graph,
and the logits rows it passes to the sampler are exactly those, in that order; the tap
(``tapped_model_class``) stores that argument. (With the sampler sharded over tensor-parallel
ranks V2 calls ``compute_logits_local`` instead; tensor parallelism is refused by this backend.)
"""

from __future__ import annotations

import time

from torch import Tensor

from .vllm_hooks import EXTRA_ARGS_KEY, HiddenStateTap, RequestState, apply_policies


def temperature_processor_v2_class(requests: dict[str, RequestState], tap: HiddenStateTap) -> type:
    """The V2 logits processor class for one engine, bound to its request table and tap (vLLM
    instantiates it with ``(vllm_config, req_states)``). A subclass of
    ``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``, the only kind V2's loader
    accepts."""
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcessor, LogitsProcRequestState

    class TemperatureProcessorV2(LogitsProcessor):
        def __init__(self, vllm_config, req_states: LogitsProcRequestState):
            self.req_states = req_states
            self.slots: list[RequestState | None] = [None] * req_states.max_num_reqs  # slot -> its request's state

        def add_request(self, req_idx: int, sampling_params) -> bool:
            """A new request holds slot ``req_idx``: its state, or None (a request of vLLM's own
            sampling, or one that has already been released), replaces the slot's previous one."""
            key = (sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY) if sampling_params is not None else None
            state = requests.get(key) if key is not None else None
            self.slots[req_idx] = state
            return state is not None

        def apply(self, logits: Tensor, ctx: LogitsContext) -> Tensor:
            start = time.perf_counter()
            try:
                return self._apply(logits, ctx)
            finally:
                tap.apply_seconds += time.perf_counter() - start

        def _apply(self, logits: Tensor, ctx: LogitsContext) -> Tensor:
            slot_of_row = ctx.idx_mapping_np
            if logits.shape[0] != len(slot_of_row):
                raise RuntimeError(
                    f"{logits.shape[0]} logits rows for {len(slot_of_row)} requests "
                    "(speculative decoding is not supported)"
                )
            prompt_len, prefill_len = self.req_states.prompt_len.np, self.req_states.prefill_len.np
            seq_lens = ctx.seq_lens_upper_bound_np
            rows, states, steps = [], [], []
            for row, slot in enumerate(slot_of_row.tolist()):
                state = self.slots[slot]
                if state is None:
                    continue
                seq_len = int(seq_lens[row])
                if seq_len < prefill_len[slot]:  # a prompt chunk that is not the last: nothing is sampled
                    continue
                rows.append(row), states.append(state), steps.append(seq_len - int(prompt_len[slot]))
            if not rows:
                return logits
            return apply_policies(logits, tap.h, rows, states, steps)

    return TemperatureProcessorV2
