import math

import pytest
import torch
from scipy import stats

from introllm.sampler import HeadConfig, TemperatureHead, build_policy
from introllm.sampler import head as H
from introllm.sampler.rng import uniforms


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def test_initial_distribution_is_max_entropy():
    head = TemperatureHead(HeadConfig(hidden_size=64))
    assert all(abs(w.std().item() - 0.02) < 0.005 for w in (head.fc1.weight, head.fc2.weight))
    u = head(torch.zeros(1, 64))
    assert H.update_prob(u).item() == pytest.approx(0.5, abs=1e-7)
    alpha, beta = H.concentrations(u)
    assert alpha.item() == pytest.approx(1.0, abs=1e-5) and beta.item() == pytest.approx(1.0, abs=1e-5)
    u = head(torch.randn(256, 64))  # small weights: close to that for any input
    assert (H.update_prob(u) - 0.5).abs().max() < 0.1


def test_initial_policy_samples_half_updates_and_uniform_z():
    head = TemperatureHead(HeadConfig(hidden_size=64))
    policy = build_policy("learned", head)
    n = 20000
    step = torch.arange(n)
    a = policy.act(
        torch.zeros(n, 64), step, torch.ones(n), uniforms(torch.full((n,), 3), step, torch.zeros(n, dtype=torch.long))
    )
    rate = a.updated.float().mean().item()
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / n)
    z = a.z[a.updated].detach().numpy()
    assert stats.kstest(z, "uniform").pvalue > 1e-3
    assert torch.equal(a.tau[~a.updated], torch.ones(int((~a.updated).sum())))  # kept tau_prev


def _reference_log_prob(u, c, z):
    """log P(c) + c log Beta(z), from the formulas with math.lgamma in float64."""
    u_c, u_a, u_b = (float(x) for x in u)
    p = _sigmoid(u_c)
    out = math.log(p) if c else math.log(1 - p)
    if c:
        a, b = _softplus(u_a) + 1e-6, _softplus(u_b) + 1e-6
        out += (a - 1) * math.log(z) + (b - 1) * math.log1p(-z) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    return out


def test_log_prob_matches_lgamma_formula():
    g = torch.Generator().manual_seed(0)
    n = 500
    u = torch.randn(n, 3, generator=g) * 3  # concentrations from ~0.0001 to ~20
    u[:50, 1:] = torch.rand(50, 2, generator=g) * 1000  # and up to 1e3
    c = torch.rand(n, generator=g) < 0.6
    z = torch.rand(n, generator=g).clamp(1e-4, 1 - 1e-4)
    got = H.action_log_prob(u, c, z)
    ref = torch.tensor([_reference_log_prob(u[i], bool(c[i]), float(z[i])) for i in range(n)], dtype=torch.float64)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-6)
    beta_only = H.action_log_prob(u, c, z, with_gate=False)
    ref_beta = torch.tensor(
        [stats.beta.logpdf(float(z[i]), *map(float, H.concentrations(u[i]))) if c[i] else 0.0 for i in range(n)]
    )
    torch.testing.assert_close(beta_only.double(), ref_beta.double(), atol=1e-5, rtol=1e-6)


def test_tau_always_within_bounds():
    cfg = HeadConfig(hidden_size=32, tau_min=0.7, tau_max=1.3, tau_init=1.0)
    head = TemperatureHead(cfg)
    with torch.no_grad():
        head.fc2.weight.normal_(0, 50.0)  # extreme concentrations and gate probabilities
    for name in ("learned", "always-update", "prompt-level"):
        policy = build_policy(name, head)
        tau_prev = torch.full((4000,), cfg.tau_init)
        for t in range(5):
            step = torch.full((4000,), t)
            a = policy.act(
                torch.randn(4000, 32),
                step,
                tau_prev,
                uniforms(torch.arange(4000), step, torch.zeros(4000, dtype=torch.long)),
            )
            assert (a.tau >= cfg.tau_min).all() and (a.tau <= cfg.tau_max).all(), name
            assert torch.isfinite(a.logp).all()
            tau_prev = a.tau


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_boundary_z_and_extreme_concentrations_finite(dtype):
    conc = torch.tensor([1e-6, 1e-3, 1.0, 1e3])
    conc = conc.double()
    u_ab = (conc + torch.log(-torch.expm1(-conc))).float()  # softplus^-1, so softplus(u) = conc
    a, b = torch.meshgrid(u_ab, u_ab, indexing="ij")
    z_values = torch.tensor([0.0, 1e-30, 1e-6, 0.5, 1 - 1e-7, 1.0])
    u = (
        torch.stack(torch.broadcast_tensors(torch.zeros_like(a), a, b), -1)
        .reshape(-1, 1, 3)
        .expand(-1, len(z_values), 3)
    )
    u = u.to(dtype).float().clone().requires_grad_(True)
    z = z_values.expand(u.shape[0], -1)
    for c in (torch.ones_like(z, dtype=torch.bool), torch.zeros_like(z, dtype=torch.bool)):
        logp = H.action_log_prob(u, c, z)
        assert torch.isfinite(logp).all()
        (grad,) = torch.autograd.grad(logp.sum(), u)
        assert torch.isfinite(grad).all()


def test_bf16_head_gives_finite_logp_and_grads():
    head = TemperatureHead(HeadConfig(hidden_size=32)).to(torch.bfloat16)
    h = torch.randn(16, 32, dtype=torch.bfloat16) * 10
    u = head(h)
    assert u.dtype == torch.float32
    logp = H.action_log_prob(u, torch.rand(16) < 0.5, torch.rand(16))
    logp.sum().backward()
    assert torch.isfinite(logp).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_nan_z_where_not_updated_is_harmless():
    u = torch.zeros(3, 3, requires_grad=True)
    logp = H.action_log_prob(u, torch.tensor([False, False, True]), torch.tensor([float("nan"), 0.0, 0.3]))
    logp.sum().backward()
    assert torch.isfinite(logp).all() and torch.isfinite(u.grad).all()


@pytest.mark.parametrize(
    "kwargs", [dict(tau_min=1.0, tau_max=1.0), dict(tau_min=0, tau_max=1), dict(tau_init=2.0), dict(hidden_size=1)]
)
def test_head_config_validation(kwargs):
    with pytest.raises(ValueError):
        HeadConfig(**{"hidden_size": 8, **kwargs})
