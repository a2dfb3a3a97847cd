"""The logits processor of the vLLM backend on its own (no engine): row bookkeeping through
BatchUpdate, the tau applied per row, decisions equal to the policy's, the overwrite of a
discarded chunk's decision, and the uniforms drawn ahead in chunks."""

import pytest
import torch
from conftest import random_head
from vllm import SamplingParams as VParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from introllm.sampler.policies import build_policy
from introllm.sampler.rng import uniforms
from introllm.sampler.vllm_hooks import (
    EXTRA_ARGS_KEY,
    UNIFORM_CHUNK,
    HiddenStateTap,
    RequestState,
    _step_uniforms,
    temperature_processor_class,
)

D, V = 16, 50


@pytest.fixture
def setup():
    head = random_head(D, seed=1, scale=0.3)
    requests, tap = {}, HiddenStateTap()
    proc = temperature_processor_class(requests, tap)(None, "cpu", False)
    return head, requests, tap, proc


def _add(requests, key, state, index, outputs):
    requests[key] = state
    return (index, VParams(extra_args={EXTRA_ARGS_KEY: key}), [1, 2], outputs)


@torch.no_grad()
def _expected(state, step, h):
    rand = uniforms(torch.tensor([state.seed]), torch.tensor([step]), torch.tensor([state.stream]))
    a = state.policy.act(h[None], torch.tensor([step]), torch.tensor([state.tau_before(step)]), rand)
    return float(a.tau), bool(a.updated)


def test_rows_follow_batch_updates_and_get_their_own_tau(setup):
    head, requests, tap, proc = setup
    learned, ead = build_policy("learned", head), build_policy("ead")
    outs = {k: [] for k in "abc"}
    a, b = RequestState(learned, seed=5, stream=0), RequestState(ead, seed=6, stream=1)
    plain = (2, VParams(), [1], outs["c"])  # a request without IntroLLM state: left alone
    proc.update_state(
        BatchUpdate(3, [], [_add(requests, "a", a, 0, outs["a"]), _add(requests, "b", b, 1, outs["b"]), plain], [])
    )

    for step in range(3):
        h = torch.randn(3, D)
        logits = torch.randn(3, V)
        before = logits.clone()
        tap.h = h
        rows = {0: a, 1: b}
        expected = {i: _expected(s, step, h[i]) for i, s in rows.items()}
        proc.apply(logits)
        for i, s in rows.items():
            assert (s.tau[step], s.updated[step]) == pytest.approx(expected[i])
            assert torch.allclose(logits[i] * s.tau[step], before[i], atol=1e-5)
        assert torch.equal(logits[2], before[2])
        for k in outs:
            outs[k].append(7)
        # swap rows 0 and 1 between steps: each state must follow its request
        proc.update_state(BatchUpdate(3, [], [], [(0, 1, MoveDirectionality.SWAP)]))
        a, b = b, a
    assert b.policy is learned and len(b.tau) == 3 and len(a.tau) == 3
    assert a.tau == pytest.approx([1.2] * 3)  # ead's warm-up
    proc.update_state(BatchUpdate(2, [0, 1], [], []))
    logits = torch.randn(3, V)
    assert torch.equal(proc.apply(logits.clone()), logits)  # no tracked rows left


def test_a_recomputed_step_keeps_the_last_decision(setup):
    """A prompt chunk whose token vLLM discards also gets a decision for step 0; the real one,
    made later from the prompt's last hidden state, replaces it."""
    head, requests, tap, proc = setup
    state = RequestState(build_policy("always-update", head), seed=3, stream=0)
    outputs = []
    proc.update_state(BatchUpdate(1, [], [_add(requests, "a", state, 0, outputs)], []))
    g = torch.Generator().manual_seed(0)
    tap.h = torch.randn(1, D, generator=g)
    proc.apply(torch.randn(1, V))
    first = state.tau[0]
    h = torch.randn(1, D, generator=g)
    tap.h = h
    proc.apply(torch.randn(1, V))
    assert len(state.tau) == 1 and state.tau[0] != first
    assert state.tau[0] == pytest.approx(_expected(state, 0, h[0])[0])


def test_hidden_states_must_match_the_rows(setup):
    head, requests, tap, proc = setup
    proc.update_state(
        BatchUpdate(1, [], [_add(requests, "a", RequestState(build_policy("learned", head), 1, 0), 0, [])], [])
    )
    tap.h = torch.randn(2, D)
    with pytest.raises(RuntimeError, match="speculative decoding"):
        proc.apply(torch.randn(1, V))


def test_uniforms_drawn_ahead_equal_the_per_step_ones():
    states = [RequestState(build_policy("ead"), seed=s, stream=k) for s, k in ((1, 0), (2**62, 3), (-5, 7))]
    for steps in ([0, 0, 0], [1, 5, 2], [UNIFORM_CHUNK - 1, UNIFORM_CHUNK, 3], [200, 64, 65]):
        got = _step_uniforms(states, steps, "cpu")
        want = uniforms(
            torch.tensor([s.seed for s in states]), torch.tensor(steps), torch.tensor([s.stream for s in states])
        )
        assert torch.equal(got, want)
