"""The V2 logits processor (``vllm_hooks_v2``) on its own, driven the way vLLM's Model Runner V2
drives it, with vLLM's real request-state buffers (``vllm.v1.worker.gpu.states.RequestState``: its
slot free list, prompt and prefill lengths) and real ``LogitsContext`` objects: rows re-sorted
every step, requests added and removed, slots reused, mixed policies, rows of other requests left
exactly as they were, and every decision equal to the torch engine's for the same hidden state,
seed and stream.

Model Runner V2 itself cannot run here (it needs Triton; this CPU build has none), so these tests
stand in for the engine-level ones that tests/test_vllm.py runs on the V1 runner.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_head
from vllm import SamplingParams as VParams

from introllm.sampler.policies import act_mixed, build_policy
from introllm.sampler.rng import uniforms
from introllm.sampler.vllm_hooks import EXTRA_ARGS_KEY, HiddenStateTap, RequestState, temperature_processor_class
from introllm.sampler.vllm_hooks_v2 import temperature_processor_v2_class

D, V, SLOTS = 16, 50, 6


class FakeRunner:
    """The part of ``GPUModelRunner`` that talks to a logits processor: ``add_requests`` (slot from
    the free list, then ``sampler.add_request``), ``remove_request``, and per step the
    ``LogitsContext`` the sampler builds (``Sampler.__call__``), with one logits row per request in
    the order the runner sorted the batch into. Everything it hands over is vLLM's own type."""

    def __init__(self, processor_class):
        import vllm.v1.worker.gpu.buffer_utils as buffers
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState
        from vllm.v1.worker.gpu.states import RequestState as VRequestState

        # Pinned memory needs CUDA: take the fallback vLLM has for platforms without it.
        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(buffers, "is_uva_available", lambda: False)
        self.states = VRequestState(SLOTS, 256, 256, 0, V, torch.device("cpu"), use_dense_all_token_ids=True)
        self.processor = processor_class(None, LogitsProcRequestState.from_request_state(self.states))
        self.seq_len: dict[str, int] = {}  # tokens the model will have seen once this step is computed

    def close(self):
        self._patch.undo()

    def slot(self, req_id: str) -> int:
        return self.states.req_id_to_index[req_id]

    def add(
        self, req_id: str, params: VParams, prompt_len: int = 5, num_outputs: int = 0, first_chunk: int | None = None
    ):
        """Admit a request (``num_outputs`` > 0: resumed after preemption with that many tokens);
        its first step computes ``first_chunk`` tokens (default: the whole prefill)."""
        prefill = list(range(prompt_len + num_outputs))
        self.states.add_request(req_id, prompt_len, prefill, num_computed_tokens=0, max_tokens=64)
        self.processor.add_request(self.slot(req_id), params)
        # (the host halves of these buffers are what the processor reads; the device copies of
        # total_len etc. need a Triton kernel, absent here, and the processor does not use them)
        self.states.prompt_len.copy_to_uva(), self.states.prefill_len.copy_to_uva()
        self.seq_len[req_id] = first_chunk or len(prefill)

    def remove(self, req_id: str) -> int:
        del self.seq_len[req_id]
        return self.states.remove_request(req_id)

    def apply(self, order: list[str], logits: torch.Tensor):
        """One sampler call with the batch in ``order``; then every request advances one token
        (a prompt chunk advances to the end of its prefill)."""
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext

        slots = np.array([self.slot(r) for r in order], dtype=np.intp)
        seq_lens = np.array([self.seq_len[r] for r in order], dtype=np.int32)
        idx = torch.from_numpy(slots.astype(np.int32))
        ctx = LogitsContext(
            expanded_idx_mapping=idx,
            idx_mapping=idx,
            idx_mapping_np=slots,
            expanded_local_pos=torch.zeros(len(order), dtype=torch.int32),
            input_ids=torch.zeros(len(order), dtype=torch.int32),
            pos=torch.from_numpy(seq_lens.astype(np.int64) - 1),
            seq_lens_upper_bound_np=seq_lens,
        )
        out = self.processor.apply(logits, ctx)
        for r in order:
            prefill = int(self.states.prefill_len.np[self.slot(r)])
            self.seq_len[r] = prefill if self.seq_len[r] < prefill else self.seq_len[r] + 1
        return out


@pytest.fixture
def head():
    return random_head(D, seed=1, scale=0.3)


@pytest.fixture
def engine():
    """A V2 processor class bound to a request table and tap, and its runner."""
    requests, tap = {}, HiddenStateTap()
    runner = FakeRunner(temperature_processor_v2_class(requests, tap))
    yield requests, tap, runner
    runner.close()


def params_for(requests: dict, key: str, state: RequestState | None) -> VParams:
    """vLLM's SamplingParams of a request; with a state, its key in extra_args, as VLLMBatch does."""
    if state is None:
        return VParams(temperature=0.7)
    requests[key] = state
    return VParams(temperature=1.0, extra_args={EXTRA_ARGS_KEY: key})


@torch.no_grad()
def torch_engine_decision(state: RequestState, step: int, h: torch.Tensor, tau_prev: float):
    """The torch engine's decision for one sequence (``DecodeBatch._act``: ``act_mixed`` on the
    row's hidden state with the uniforms of (seed, step, stream))."""
    rand = uniforms(torch.tensor([state.seed]), torch.tensor([step]), torch.tensor([state.stream]))
    a = act_mixed(
        [state.policy], torch.zeros(1, dtype=torch.long), h[None], torch.tensor([step]), torch.tensor([tau_prev]), rand
    )
    return float(a.tau), bool(a.updated)


def check_step(tap, runner, order, states, expected_prev, generator):
    """Run one step in ``order``; each row with a state must be divided by the torch engine's tau
    for its request and step, every other row must come back bit for bit. Returns the new taus."""
    h = torch.randn(len(order), D, generator=generator)
    logits = torch.randn(len(order), V, generator=generator)
    before = logits.clone()
    tap.h = h
    steps = {r: runner.seq_len[r] - int(runner.states.prompt_len.np[runner.slot(r)]) for r in order}
    out = runner.apply(order, logits)
    taus = {}
    for row, r in enumerate(order):
        state = states.get(r)
        if state is None:
            assert torch.equal(out[row], before[row]), f"row {row} ({r}) has no IntroLLM state but was changed"
            continue
        step = steps[r]
        tau, updated = torch_engine_decision(state, step, h[row], expected_prev[r])
        assert len(state.tau) == step + 1, f"{r}: {len(state.tau)} decisions at step {step}"
        assert state.tau[step] == pytest.approx(tau, rel=1e-6) and state.updated[step] == updated, (r, step)
        assert torch.allclose(out[row] * tau, before[row], rtol=1e-5, atol=1e-6), (
            f"row {row} ({r}) not divided by its tau"
        )
        taus[r] = tau
    return taus


def test_rows_follow_the_slots_through_reordering_and_mixed_policies(engine, head):
    requests, tap, runner = engine
    g = torch.Generator().manual_seed(0)
    states = {
        "learned": RequestState(build_policy("learned", head), seed=11, stream=0),
        "always": RequestState(build_policy("always-update", head), seed=12, stream=1),
        "ead": RequestState(build_policy("ead:warmup=2,gamma=0.8"), seed=13, stream=0),
        "tampo": RequestState(build_policy("tampo"), seed=14, stream=2),
    }
    ids = [*states, "plain"]
    for r in ids:
        runner.add(r, params_for(requests, r, states.get(r)), prompt_len=3 + len(r))
    prev = {r: s.policy.initial_tau for r, s in states.items()}
    for step in range(6):
        order = [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
        if step == 0:  # make sure rows and slots disagree on the first step already
            order = sorted(ids, key=runner.slot)[::-1]
            if [runner.slot(r) for r in order] == list(range(len(order))):
                order = order[1:] + order[:1]
        prev.update(check_step(tap, runner, order, states, prev, g))
    assert all(len(s.tau) == 6 for s in states.values())
    assert any(s.updated[t] != s.updated[0] for s in states.values() for t in range(6))  # decisions do vary
    assert states["ead"].tau[:2] == pytest.approx([1.2, 1.2]) and states["ead"].tau[2] < 1.2


def test_a_freed_slot_serves_its_next_request_only(engine, head):
    """vLLM does not tell a processor that a request left; the slot's next ``add_request`` must
    replace everything, including with 'not mine' for a request of vLLM's own sampling."""
    requests, tap, runner = engine
    g = torch.Generator().manual_seed(1)
    learned, always = build_policy("learned", head), build_policy("always-update", head)
    # "a" draws a new tau at every step, so a row wrongly given its state would certainly change
    states = {"a": RequestState(always, seed=1, stream=0), "b": RequestState(learned, seed=2, stream=0)}
    runner.add("a", params_for(requests, "a", states["a"]))
    runner.add("b", params_for(requests, "b", states["b"]))
    prev = {r: s.policy.initial_tau for r, s in states.items()}
    for _ in range(2):
        prev.update(check_step(tap, runner, ["b", "a"], states, prev, g))

    freed = runner.remove("a")  # a finished; a fixed-temperature request takes its slot
    del requests["a"]
    finished = states.pop("a")
    trace = list(finished.tau)
    runner.add("plain", params_for(requests, "plain", None))
    assert runner.slot("plain") == freed
    prev.update(check_step(tap, runner, ["plain", "b"], states, prev, g))
    prev.update(check_step(tap, runner, ["b", "plain"], states, prev, g))
    assert finished.tau == trace  # the finished request's record is left alone

    freed = runner.remove("plain")  # and then a new learned request: its own decisions from step 0
    states["c"] = RequestState(learned, seed=3, stream=5)
    runner.add("c", params_for(requests, "c", states["c"]))
    assert runner.slot("c") == freed
    prev["c"] = learned.initial_tau
    for order in (["c", "b"], ["b", "c"]):
        prev.update(check_step(tap, runner, order, states, prev, g))
    assert len(states["c"].tau) == 2 and len(states["b"].tau) == 6


def test_a_prompt_in_chunks_is_decided_once_at_its_last_chunk(engine, head):
    requests, tap, runner = engine
    g = torch.Generator().manual_seed(2)
    state = RequestState(build_policy("always-update", head), seed=4, stream=0)
    runner.add("long", params_for(requests, "long", state), prompt_len=100, first_chunk=64)
    logits = torch.randn(1, V)
    tap.h = torch.randn(1, D)
    assert torch.equal(runner.apply(["long"], logits.clone()), logits)  # chunk 1 of 2: its token is discarded
    assert state.tau == []
    check_step(tap, runner, ["long"], {"long": state}, {"long": state.policy.initial_tau}, g)  # the last chunk: step 0
    assert len(state.tau) == 1


def test_a_resumed_request_continues_at_its_step(engine, head):
    """After preemption vLLM re-admits a request with its output so far in the prefill; the next
    decision is for the step after those tokens, with the previous step's tau."""
    requests, tap, runner = engine
    g = torch.Generator().manual_seed(3)
    state = RequestState(build_policy("learned", head), seed=5, stream=1)
    runner.add("r", params_for(requests, "r", state), prompt_len=7)
    for _ in range(3):
        check_step(tap, runner, ["r"], {"r": state}, {"r": state.tau_before(len(state.tau))}, g)
    runner.remove("r")
    runner.add("r", params_for(requests, "r", state), prompt_len=7, num_outputs=3)
    check_step(tap, runner, ["r"], {"r": state}, {"r": state.tau[2]}, g)
    assert len(state.tau) == 4


def test_hidden_states_and_rows_must_agree(engine, head):
    requests, tap, runner = engine
    runner.add("a", params_for(requests, "a", RequestState(build_policy("learned", head), 1, 0)))
    tap.h = torch.randn(2, D)
    with pytest.raises(RuntimeError, match="speculative decoding"):
        runner.apply(["a"], torch.randn(1, V))


def test_vllm_v2_loader_takes_the_v2_class_and_refuses_the_v1_one(engine):
    """What made the V1-only backend stop at start-up on a GPU: V2's loader refuses V1 classes."""
    from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors

    requests, tap, runner = engine
    built = build_custom_logits_processors(None, runner.states, False, (temperature_processor_v2_class(requests, tap),))
    assert len(built) == 1 and type(built[0]).__name__ == "TemperatureProcessorV2"
    with pytest.raises(ValueError, match="not a subclass"):
        build_custom_logits_processors(None, runner.states, False, (temperature_processor_class(requests, tap),))
