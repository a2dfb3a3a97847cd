"""GRPO math against naive loop references (paper eqs. 3-4)."""

import math
import statistics

import pytest
import torch

from introllm.training.losses import aggregate, clipped_surrogate, group_advantages, kl_k3, policy_loss
from introllm.training.methods import tampo_update


def naive_advantages(rewards, G):
    out = []
    for g in range(0, len(rewards), G):
        group = rewards[g : g + G]
        mean, std = statistics.mean(group), statistics.stdev(group)
        out += [(r - mean) / (std + 1e-8) for r in group]
    return out


def test_group_advantages_match_a_naive_loop():
    torch.manual_seed(0)
    rewards = torch.rand(24)
    got = group_advantages(rewards, 8)
    assert torch.allclose(got, torch.tensor(naive_advantages(rewards.tolist(), 8)), atol=1e-6)
    for g in range(3):  # each group is centred and has unit sample std
        assert abs(float(got[g * 8 : g * 8 + 8].sum())) < 1e-5
        assert abs(float(got[g * 8 : g * 8 + 8].std()) - 1) < 1e-4


def test_equal_reward_groups_get_zero_advantage_not_nan():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    adv = group_advantages(rewards, 4)
    assert torch.isfinite(adv).all()
    assert adv[:8].abs().max() == 0
    assert adv[8:].abs().min() > 0


def test_group_advantages_refuse_ragged_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)


def test_clipped_surrogate_matches_a_naive_loop():
    torch.manual_seed(1)
    N, T, eps = 5, 7, 0.2
    logp, old = torch.randn(N, T) * 0.3 - 2, torch.randn(N, T) * 0.3 - 2
    adv = torch.randn(N)
    got, clipped = clipped_surrogate(logp, old, adv, eps=eps)
    for i in range(N):
        for t in range(T):
            r = math.exp(logp[i, t] - old[i, t])
            a = float(adv[i])
            expect = min(r * a, min(max(r, 1 - eps), 1 + eps) * a)
            assert abs(float(got[i, t]) - expect) < 1e-5
            assert bool(clipped[i, t]) == (min(max(r, 1 - eps), 1 + eps) * a < r * a)


def test_ratio_one_gives_the_policy_gradient():
    torch.manual_seed(2)
    logp = torch.randn(3, 4, requires_grad=True)
    adv, mask = torch.tensor([1.0, -0.5, 2.0]), torch.ones(3, 4)
    loss, clipped = policy_loss(logp, logp.detach(), adv, mask, eps=0.2, num_sequences=3)
    loss.backward()
    assert not clipped.any()
    assert torch.allclose(logp.grad, -adv[:, None].expand(3, 4) / 3)


def test_aggregate_sums_tokens_and_divides_by_the_batch_sequence_count():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(aggregate(values, mask, num_sequences=2)) == pytest.approx((1 + 2 + 4) / 2)
    # micro-batches divided by the full batch's count add up to the full batch
    parts = aggregate(values[:1], mask[:1], num_sequences=2) + aggregate(values[1:], mask[1:], num_sequences=2)
    assert float(parts) == pytest.approx(float(aggregate(values, mask, num_sequences=2)))


def test_kl_k3_is_non_negative_and_zero_at_equality():
    a, b = torch.randn(100), torch.randn(100)
    assert (kl_k3(a, b) >= -1e-7).all()
    assert kl_k3(a, a).abs().max() == 0


def test_kl_penalty_adds_to_the_loss_only_when_on():
    logp, ref = torch.zeros(2, 3), torch.full((2, 3), -1.0)
    adv, mask = torch.zeros(2), torch.ones(2, 3)
    off, _ = policy_loss(logp, logp, adv, mask, eps=0.2, num_sequences=2, ref_logp=ref, kl_coef=0.0)
    on, _ = policy_loss(logp, logp, adv, mask, eps=0.2, num_sequences=2, ref_logp=ref, kl_coef=0.5)
    assert float(off) == 0
    assert float(on) == pytest.approx(0.5 * 3 * (math.exp(-1) + 1 - 1))


def test_tampo_update_moves_towards_temperatures_that_explain_good_samples():
    K = 10
    probs = torch.full((K,), 0.1)
    # sample 0 (advantage +1) is most likely at the lowest temperature, sample 1 (-1) at the highest
    loglik = torch.stack([torch.linspace(0, -3, K), torch.linspace(-3, 0, K)])
    new = tampo_update(probs, torch.tensor([1.0, -1.0]), loglik, ema=0.9, sharpness=5.0)
    assert new.sum() == pytest.approx(1.0)
    assert new[0] > probs[0] and new[-1] < probs[-1]
    # no signal, no change
    same = tampo_update(probs, torch.zeros(2), loglik, ema=0.9, sharpness=5.0)
    assert torch.equal(same, probs)
