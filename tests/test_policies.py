import math

import pytest
import torch

from introllm.sampler import HeadConfig, TemperatureHead, build_policy, policy_names
from introllm.sampler import head as H
from introllm.sampler.policies import TAMPO_TEMPERATURES, EADExpPolicy, EADPolicy, TampoPolicy, ead_gamma
from introllm.sampler.rng import uniforms

B = 6


def _act(policy, steps, h=None, tau_prev=None, seed=0):
    step = torch.as_tensor(steps)
    n = len(step)
    h = torch.randn(n, 16) if h is None else h
    tau_prev = torch.full((n,), policy.initial_tau) if tau_prev is None else tau_prev
    return policy.act(h, step, tau_prev, uniforms(torch.full((n,), seed), step, torch.arange(n)))


@pytest.fixture
def head():
    return TemperatureHead(HeadConfig(hidden_size=16))


def test_registry_lists_names_and_rejects_unknown(head):
    assert {"learned", "always-update", "prompt-level", "fixed", "greedy", "ead", "ead-exp", "tampo"} <= set(
        policy_names()
    )
    with pytest.raises(ValueError, match="unknown temperature policy 'warm'.*valid policies: .*learned"):
        build_policy("warm", head)
    with pytest.raises(ValueError, match="needs a temperature head"):
        build_policy("learned", None)
    with pytest.raises(ValueError, match="not a number"):
        build_policy("fixed:hot")
    with pytest.raises(ValueError, match=">= 0"):
        build_policy("fixed:-1")
    with pytest.raises(ValueError, match="bad arguments"):
        build_policy("ead:warmth=3")


def test_fixed_and_greedy():
    a = _act(build_policy("fixed:0.7"), range(B))
    assert torch.allclose(a.tau, torch.full((B,), 0.7)) and not a.updated.any() and (a.logp == 0).all()
    assert (_act(build_policy("greedy"), range(B)).tau == 0).all()
    assert build_policy("fixed:0.7").spec == "fixed:0.7"


def test_learned_keeps_previous_tau_unless_updated(head):
    tau_prev = torch.linspace(0.7, 1.4, 200)
    a = _act(build_policy("learned", head), [3] * 200, torch.randn(200, 16), tau_prev)
    assert torch.equal(a.tau[~a.updated], tau_prev[~a.updated])
    assert (a.z[~a.updated] == 0).all()
    assert 0 < a.updated.sum() < 200
    torch.testing.assert_close(a.tau[a.updated], 0.6 + a.z[a.updated] * 0.9)


@pytest.mark.parametrize("spec", ["learned", "shifted:delta=0.2"])
@pytest.mark.parametrize("score", [True, False])
def test_a_step_without_updates_skips_the_beta_draw_and_gives_the_same_action(head, spec, score, monkeypatch):
    """Where no row's gate fires, act skips the Beta draw; each row's action is the one the full
    path gives it (the same row beside a row that does update forces the full path)."""
    from introllm.sampler import policies as P
    from introllm.sampler.rng import SLOT_GATE

    policy = build_policy(spec, head)
    h = torch.randn(2, 16)
    step = torch.tensor([3, 3])
    tau_prev = torch.tensor([0.8, 1.1])
    rand = uniforms(torch.full((2,), 7), step, torch.arange(2))
    rand[0, SLOT_GATE], rand[1, SLOT_GATE] = 1.0 - 1e-7, 1e-7  # row 0 keeps its tau, row 1 updates
    full = policy.act(h, step, tau_prev, rand, score)
    assert full.updated.tolist() == [False, True]
    draws = []
    real = P.beta_sample
    monkeypatch.setattr(P, "beta_sample", lambda *a: draws.append(1) or real(*a))
    alone = policy.act(h[:1], step[:1], tau_prev[:1], rand[:1], score)
    assert not draws  # skipped
    assert torch.equal(alone.tau, full.tau[:1]) and torch.equal(alone.z, full.z[:1])
    assert torch.equal(alone.updated, full.updated[:1])
    torch.testing.assert_close(alone.logp, full.logp[:1])
    assert alone.tau.data_ptr() != tau_prev.data_ptr()  # a new tensor, not the state's


@pytest.mark.parametrize("spec", ["learned", "shifted:delta=-0.3", "always-update"])
def test_a_batch_of_one_unscored_acts_as_the_tensor_path(spec):
    """A lone row without scoring (a server's single stream) takes the scalar path
    (``_act_one``); over 400 rows of varied head outputs it makes the same gate decisions and the
    same tau and z, to float32 rounding (of the head too: 1e-5, as test_engine's batch invariance), as the tensor path (scored, which always takes it)."""
    torch.manual_seed(0)
    head = TemperatureHead(HeadConfig(hidden_size=16, tau_min=0.1, tau_max=1.5))
    with torch.no_grad():
        head.fc1.weight.mul_(30.0), head.fc2.weight.mul_(30.0)  # concentrations ~0 to ~100, gates ~0 to ~1
    policy = build_policy(spec, head)
    n = 400
    h, step = torch.randn(n, 16) * torch.logspace(-1, 1.5, n)[:, None], torch.arange(n)
    tau_prev = torch.rand(n) + 0.5
    rand = uniforms(torch.full((n,), 11), step, torch.zeros(n, dtype=torch.long))
    with torch.inference_mode():
        full = policy.act(h, step, tau_prev, rand, score=True)
        ones = [
            policy.act(h[i : i + 1], step[i : i + 1], tau_prev[i : i + 1], rand[i : i + 1], False) for i in range(n)
        ]
    u = head(h).detach()
    assert 0.1 < full.updated.float().mean() <= 1.0 and H.concentrations(u)[0].max() > 20  # both branches, wide range
    assert torch.equal(torch.cat([a.updated for a in ones]), full.updated)
    torch.testing.assert_close(torch.cat([a.tau for a in ones]), full.tau, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([a.z for a in ones]), full.z, atol=1e-5, rtol=0)
    assert all(a.tau.dtype == a.z.dtype == torch.float32 for a in ones)


def test_always_update_and_prompt_level(head):
    a = _act(build_policy("always-update", head), range(B))
    assert a.updated.all()
    p = build_policy("prompt-level", head)
    a = _act(p, [0, 0, 1, 2, 5, 9], tau_prev=torch.full((B,), 1.3))
    assert a.updated.tolist() == [True, True, False, False, False, False]
    assert (a.tau[2:] == 1.3).all()


def test_ead_paper_schedule():
    p = EADPolicy(tau_start=1.2, tau_min=0.1, gamma=0.9, warmup=10)
    steps = torch.tensor([0, 9, 10, 11, 30, 200])
    tau = p.schedule(steps)
    expected = [1.2, 1.2, 1.2 * 0.9**10, 1.2 * 0.9**11, max(0.1, 1.2 * 0.9**30), 0.1]
    torch.testing.assert_close(tau.float(), torch.tensor(expected, dtype=torch.float32))
    a = _act(p, [0, 1, 10, 11])
    assert a.updated.tolist() == [False, False, True, True]
    assert build_policy("ead:gamma=0.9,tau_min=0.1").gamma == 0.9


def test_ead_gamma_adapts_with_training_progress():
    assert ead_gamma(25, 500, 0, 100) == 1.0
    assert ead_gamma(25, 500, 100, 100) == pytest.approx(math.exp(-25 / 500))
    assert ead_gamma(25, 1000, 100, 100) > ead_gamma(25, 500, 100, 100)  # longer answers anneal slower


def test_ead_exp_authors_variant():
    p = EADExpPolicy(tau_max=1.2, tau_min=0.1, d=100)
    steps = torch.tensor([0, 50, 100, 1000])
    expected = [max(1 + 1.2 - math.exp(t / 100), 0.1) for t in steps.tolist()]
    torch.testing.assert_close(p.schedule(steps).float(), torch.tensor(expected, dtype=torch.float32))
    assert p.schedule(torch.tensor([0])).item() == pytest.approx(1.2)


def test_tampo_nucleus_and_sampling():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05] + [0.0] * 6)
    p = TampoPolicy(top_p=0.9, probs=probs)
    nucleus = p.nucleus()
    torch.testing.assert_close(nucleus[:3], probs[:3] / 0.95)
    assert (nucleus[3:] == 0).all()  # 0.5 + 0.3 + 0.15 >= 0.9: the 0.05 tail is cut
    n = 6000
    a = _act(p, [0] * n, h=torch.zeros(n, 16))
    counts = torch.stack([(a.tau == t).sum() for t in torch.tensor(TAMPO_TEMPERATURES[:3])]).float() / n
    assert (counts - nucleus[:3]).abs().max() < 0.03
    torch.testing.assert_close(a.tau.unique(), torch.tensor(TAMPO_TEMPERATURES[:3]))
    torch.testing.assert_close(a.logp, torch.log(nucleus[((a.tau - 0.6) / 0.1).round().long()]))
    later = _act(p, [4] * B, tau_prev=torch.full((B,), 0.7))
    assert (later.tau == 0.7).all() and not later.updated.any()


def test_tampo_rejects_bad_probs():
    with pytest.raises(ValueError):
        TampoPolicy(probs=[1.0, 2.0])
