"""GRPO's math as pure tensor functions (paper eqs. 3-4, Algorithm 1 lines 26-31).

Token aggregation (the one place it is decided, ``aggregate``): the per-token objectives of a
sequence are summed and divided by the number of sequences in the whole batch, as Algorithm 1
writes it, (1/G) sum_i sum_t. Dividing by the batch's sequence count, a constant that does not
depend on the micro-batch, is what makes gradient accumulation give exactly the full batch's
gradient. Unlike a per-sequence mean it does not favour short wrong answers over long ones.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_size: int, *, eps: float = 1e-8) -> Tensor:
    """A_i = (R_i - mean_group R) / (std_group R + eps) (eq. 3, with Algorithm 1's epsilon).

    rewards: float [num_groups * group_size], the samples of a group adjacent. std is the sample
    standard deviation (Bessel-corrected, as in DeepSeekMath's GRPO code). A group whose rewards
    are all equal gets advantage 0 (never NaN): it carries no signal about which sample was better.

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2)
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)
    if group_size == 1:  # nothing to compare with
        return torch.zeros_like(r).view(-1)
    centred = r - r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, unbiased=True)
    return (centred / (std + eps)).view(-1)


def clipped_surrogate(logp: Tensor, old_logp: Tensor, adv: Tensor, *, eps: float) -> tuple[Tensor, Tensor]:
    """Per-token clipped objective min(r A, clip(r, 1-eps, 1+eps) A) with r = exp(logp - old_logp) (eq. 4).

    logp, old_logp: [N, T]; adv: [N] (one advantage per sequence). Returns (objective [N, T], to be
    maximised; clipped [N, T] bool, where the clipped branch is the smaller one and the gradient is zero).
    """
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    unclipped, clipped = ratio * a, ratio.clamp(1 - eps, 1 + eps) * a
    return torch.minimum(unclipped, clipped), clipped < unclipped


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL(pi || pi_ref) estimate exp(ref - logp) - (ref - logp) - 1 >= 0 (Schulman's k3)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def truncated_is_weights(train_logp: Tensor, rollout_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights min(pi_train / pi_rollout, cap) per token, detached.

    train_logp: the trainer's recomputed log-probs of the sampled tokens under the recorded tau
    (theta_old), [N, T]; rollout_logp: those the rollout engine reported when it drew them, [N, T].
    cap: C > 0 (``cap <= 0`` turns the correction off: all weights 1). Returns float32 [N, T], no
    gradient (the weight corrects which distribution the samples came from; it is not optimised).
    Source: Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
    training" (TIS, as verl's ``tis_imp_ratio_cap`` and TRL's ``vllm_importance_sampling_cap``).

    >>> truncated_is_weights(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, -2.0]]), 2.0)
    tensor([[1., 2.]])
    """
    if cap <= 0:
        return torch.ones_like(train_logp, dtype=torch.float32)
    ratio = torch.exp(train_logp.detach().float() - rollout_logp.detach().float())
    return ratio.clamp(max=cap)


def aggregate(values: Tensor, mask: Tensor, *, num_sequences: int, weights: Tensor | None = None) -> Tensor:
    """sum over tokens of values * mask [* weights], divided by the batch's number of sequences
    (see module doc). The one place token objectives are combined, so the truncated
    importance-sampling weights (``truncated_is_weights``) are applied here.

    values, mask, weights: [N, T]; num_sequences: sequences in the full batch (all micro-batches of it).
    """
    if weights is not None:
        mask = mask * weights
    return (values * mask).sum() / num_sequences


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    eps: float,
    num_sequences: int,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GRPO loss to minimise: -aggregate(surrogate) [+ kl_coef * aggregate(k3)]; also the clipped mask.

    is_weights: optional [N, T] truncated importance-sampling weights of the tokens (rollout
    engine vs trainer), multiplying the surrogate's terms."""
    objective, clipped = clipped_surrogate(logp, old_logp, adv, eps=eps)
    loss = -aggregate(objective, mask, num_sequences=num_sequences, weights=is_weights)
    if ref_logp is not None and kl_coef > 0:
        loss = loss + kl_coef * aggregate(kl_k3(logp, ref_logp), mask, num_sequences=num_sequences)
    return loss, clipped
