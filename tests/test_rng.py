import numpy as np
import pytest
import torch
from scipy import stats

from introllm.sampler import rng


def _u(n: int, seed: int = 12345) -> torch.Tensor:
    return rng.uniforms(torch.full((n,), seed), torch.arange(n), torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize(
    "counter, key, expected",
    [  # Random123 known-answer vectors for philox4x32-10
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    assert rng.philox4x32(torch.tensor(counter), torch.tensor(key)).tolist() == expected


def test_uniforms_open_interval_and_uniform():
    rand = _u(20000)
    assert rand.shape == (20000, rng.NUM_UNIFORMS)
    assert (rand > 0).all() and (rand < 1).all()
    for col in (0, 1, rng.NUM_UNIFORMS - 1):
        assert stats.kstest(rand[:, col].numpy(), "uniform").pvalue > 1e-3


def test_uniforms_depend_only_on_seed_step_stream():
    seed, step, stream = torch.tensor([7, 7, 8]), torch.tensor([3, 3, 3]), torch.tensor([0, 1, 0])
    rand = rng.uniforms(seed, step, stream)
    alone = rng.uniforms(seed[1:2], step[1:2], stream[1:2])
    assert torch.equal(rand[1], alone[0])  # batch-invariant
    assert not torch.equal(rand[0], rand[1]) and not torch.equal(rand[0], rand[2])  # streams and seeds differ


def test_uniforms_ahead_equal_each_step_drawn_alone():
    seed, first, stream = torch.tensor([7, -3]), torch.tensor([0, 61]), torch.tensor([2, 0])
    ahead = rng.uniforms_ahead(seed, first, stream, steps=5)
    assert ahead.shape == (2, 5, rng.NUM_UNIFORMS)
    for i in range(2):
        for j in range(5):
            assert torch.equal(ahead[i, j], rng.uniforms(seed[i : i + 1], first[i : i + 1] + j, stream[i : i + 1])[0])


def test_full_64_bit_seeds():
    a = rng.uniforms(torch.tensor([5]), torch.tensor([0]), torch.tensor([0]))
    b = rng.uniforms(torch.tensor([5 + (1 << 40)]), torch.tensor([0]), torch.tensor([0]))
    c = rng.uniforms(torch.tensor([-1]), torch.tensor([0]), torch.tensor([0]))  # 2**64 - 1
    assert not torch.equal(a, b) and torch.isfinite(c).all()


def test_normals():
    z = rng.normals(_u(20000)[:, :8]).flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("alpha", [1e-6, 1e-3, 0.05, 0.5, 1.0, 3.0, 100.0, 1000.0])
def test_gamma_log_distribution(alpha):
    n = 20000
    rand = _u(n, seed=99)[:, rng.SLOT_BETA_A : rng.SLOT_BETA_A + 2 * rng.GAMMA_TRIES + 1]
    log_g = rng.gamma_log(torch.full((n,), alpha), rand).double().numpy()
    assert np.isfinite(log_g).all()

    def cdf(x):  # P(log G <= x); the leading term of the series where exp(x) underflows
        x = np.asarray(x, dtype=np.float64)
        small = x < -700
        out = stats.gamma(alpha).cdf(np.exp(np.where(small, 0.0, x)))
        from scipy.special import gammaln

        return np.where(small, np.exp(np.minimum(alpha * x - gammaln(alpha + 1), 0.0)), out)

    assert stats.kstest(log_g, cdf).pvalue > 1e-3


@pytest.mark.parametrize("a, b", [(1, 1), (0.5, 0.5), (2, 5), (30, 3), (0.1, 4), (1000, 1000)])
def test_beta_sample_distribution(a, b):
    n = 20000
    z = rng.beta_sample(torch.full((n,), float(a)), torch.full((n,), float(b)), _u(n, seed=4242))
    assert torch.isfinite(z).all()
    assert stats.kstest(z.numpy(), stats.beta(a, b).cdf).pvalue > 1e-3


def test_beta_sample_extreme_concentrations_finite():
    n = 1000
    rand = _u(n)
    for a, b in [(1e-6, 1e-6), (1e-6, 1e3), (1e3, 1e-6), (1e3, 1e3)]:
        z = rng.beta_sample(torch.full((n,), a), torch.full((n,), b), rand)
        assert torch.isfinite(z).all() and (z >= 0).all() and (z <= 1).all()


@pytest.mark.parametrize("a, b", [(1e-6, 1e-6), (1e-6, 1e3), (0.3, 0.7), (1, 1), (2, 5), (30, 3), (1e3, 1e3)])
def test_scalar_beta_sample_matches_the_tensor_path(a, b):
    """beta_sample_one (a batch of one, Python floats) draws what beta_sample draws from the same
    uniforms, to float32 rounding, across concentrations from 1e-6 to 1e3."""
    n = 2000
    rand = _u(n, seed=99)
    z = rng.beta_sample(torch.full((n,), float(a)), torch.full((n,), float(b)), rand)
    one = torch.tensor([rng.beta_sample_one(float(a), float(b), row) for row in rand.tolist()])
    torch.testing.assert_close(one, z, atol=2e-6, rtol=0)
    log_g = rng.gamma_log(torch.full((n,), float(a)), rand[:, rng.SLOT_BETA_A :])
    log_one = torch.tensor([rng.gamma_log_one(float(a), row[rng.SLOT_BETA_A :]) for row in rand.tolist()])
    torch.testing.assert_close(log_one, log_g, atol=1e-5, rtol=2e-6)
