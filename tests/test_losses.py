"""GRPO math against naive loop references (paper eqs. 3-4)."""

import math
import statistics

import pytest
import torch

from introllm.training.losses import (
    aggregate,
    clipped_surrogate,
    group_advantages,
    kl_k3,
    policy_loss,
    truncated_is_weights,
)
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


def test_truncated_is_weights_are_the_probability_ratio_capped():
    # trainer log-probs vs rollout log-probs: ratios 1, e^0.5, e^-1, e^2 (over the cap), e^0.69 (just under)
    train = torch.tensor([[-1.0, -0.5, -2.0, 0.0, -0.31]])
    rollout = torch.tensor([[-1.0, -1.0, -1.0, -2.0, -1.0]])
    w = truncated_is_weights(train, rollout, cap=2.0)
    expected = torch.tensor([[1.0, math.exp(0.5), math.exp(-1.0), 2.0, math.exp(0.69)]])
    assert torch.allclose(w, expected, atol=1e-6)
    assert float(w.max()) == 2.0  # e^2 = 7.39 cut to the cap; weights below 1 are never raised
    assert torch.equal(truncated_is_weights(train, rollout, cap=0.0), torch.ones_like(train))  # 0 = off
    assert torch.allclose(truncated_is_weights(train, rollout, cap=10.0)[0, 3], torch.tensor(math.exp(2.0)))
    # the weight is a constant of the loss: no gradient flows into it
    t = train.clone().requires_grad_(True)
    assert not truncated_is_weights(t, rollout, cap=2.0).requires_grad


def test_is_weights_multiply_each_token_term_where_the_loss_is_aggregated():
    torch.manual_seed(3)
    logp = torch.randn(2, 3, requires_grad=True)
    adv, mask = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    w = torch.tensor([[0.5, 1.0, 2.0], [2.0, 0.25, 7.0]])  # 7.0 sits on a masked token: ignored
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, eps=0.2, num_sequences=2, is_weights=w)
    loss.backward()
    # ratio 1: d loss / d logp_t = -A_i w_t mask_t / N
    assert torch.allclose(logp.grad, -(adv[:, None] * w * mask) / 2)
    values = torch.ones(2, 3)
    assert float(aggregate(values, mask, num_sequences=2, weights=w)) == pytest.approx((0.5 + 1 + 2 + 2 + 0.25) / 2)
