"""Drawing a token from softmax(logits / tau): exact inverse-CDF sampling with given uniforms."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Draw(NamedTuple):
    tokens: Tensor  # int64 [B]
    logp: Tensor  # float32 [B] log-prob of each token under its distribution
    entropy: Tensor  # float32 [B] entropy of that distribution (nats)
    top_ids: Tensor | None  # int64 [B, k] the k most likely tokens of that distribution, if asked
    top_logp: Tensor | None  # float32 [B, k] their log-probs


def tempered(logits: Tensor, tau: Tensor) -> Tensor:
    """logits / tau, the temperature rule of sampling and of the trainer's scoring alike (the
    trainer = sampler log-prob invariant rests on this one function): float32 [..., V] from logits
    [..., V] and tau [...]; tau <= 0 (greedy) divides by 1, so a greedy token is reported and
    scored under the unscaled distribution.

    >>> tempered(torch.tensor([[2.0, 4.0]]), torch.tensor([0.5])).tolist(), tempered(torch.tensor([[2.0]]), torch.tensor([0.0])).tolist()
    ([[4.0, 8.0]], [[2.0]])
    """
    return logits.float() / torch.where(tau <= 0, 1.0, tau.float())[..., None]


UNDERFLOW_NATS = 70.0
"""How far below a row's best tempered logit ``floored`` raises the rest. A token that far below has
probability < e^-70 (4e-31): no 23-bit uniform can draw it, and up to 2^18 of them change no
float32 sum of probabilities. The floor is there for speed: on CPUs the vectorised exp takes a slow
path for results that underflow, and a low temperature (tau 0.15 on the embedded model's logits)
sends a quarter of the vocabulary there (exp and logsumexp 14x slower, measured on AVX2)."""


def floored(x: Tensor) -> Tensor:
    """x [..., V] with every entry below its row's maximum minus ``UNDERFLOW_NATS`` (-inf included)
    raised to that floor: the same normaliser and draws as x, without underflowing exps."""
    return torch.maximum(x, x.amax(dim=-1, keepdim=True) - UNDERFLOW_NATS)


def sample_tokens(
    logits: Tensor,
    tau: Tensor,
    u: Tensor,
    top_k: Tensor | None = None,
    top_p: Tensor | None = None,
    num_top: int = 0,
) -> Draw:
    """Sample one token per row from softmax(logits / tau), by inverse CDF with the uniforms u.

    logits: float32 [B, V]; tau: [B]; u: [B] in (0, 1); top_k: int64 [B] (0 = off) and top_p:
    float32 [B] (1 = off), applied after the temperature; num_top: also return the num_top most
    likely tokens and their log-probs. tau = 0 is greedy: the argmax, reported (log-prob, entropy,
    alternatives) under the unscaled distribution, tau = 1.
    """
    greedy = tau <= 0
    x = tempered(logits, tau)
    filtering = top_k is not None or top_p is not None
    if filtering:
        x = filter_logits(x, top_k, top_p)
    xs = floored(x)  # x for the normaliser and the draw; x itself for the reported log-probs
    lse = torch.logsumexp(xs, dim=-1, keepdim=True)  # [B, 1]
    probs = torch.exp(xs - lse)
    if filtering:
        probs = probs.masked_fill(x.isneginf(), 0.0)  # a filtered token has p = 0, not the floor's
    cdf = torch.cumsum(probs, dim=-1)
    target = (u[:, None] * cdf[:, -1:]).contiguous()
    tokens = torch.searchsorted(cdf, target).squeeze(-1).clamp_max(logits.shape[-1] - 1)
    if bool(greedy.any()):
        tokens = torch.where(greedy, logits.argmax(dim=-1), tokens)
    logp = (x.gather(-1, tokens[:, None]) - lse).squeeze(-1)
    if filtering:  # filtered tokens have x = -inf and p = 0; xlogy(0, 0) = 0
        entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)
    else:  # H = lse - sum_v p_v x_v (vecdot: a quarter of the time of the same dot as a bmm)
        entropy = lse.squeeze(-1) - torch.linalg.vecdot(probs, xs)
    top_ids = top_logp = None
    if num_top > 0:
        top_x, top_ids = x.topk(num_top, dim=-1)
        top_logp = top_x - lse
    return Draw(tokens, logp, entropy, top_ids, top_logp)


def filter_logits(x: Tensor, top_k: Tensor | None, top_p: Tensor | None) -> Tensor:
    """Set to -inf the tokens outside each row's top-k and top-p sets. x: [B, V] scaled logits."""
    sorted_x, order = torch.sort(x, dim=-1, descending=True)
    keep = torch.ones_like(sorted_x, dtype=torch.bool)
    if top_k is not None:
        ranks = torch.arange(x.shape[-1], device=x.device)[None, :]
        keep &= (top_k[:, None] <= 0) | (ranks < top_k[:, None])
    if top_p is not None:
        probs = torch.softmax(sorted_x, dim=-1)
        keep &= (torch.cumsum(probs, dim=-1) - probs) < top_p[:, None]  # mass before this token < p
    keep[:, 0] = True
    return x.masked_fill(~keep.scatter(-1, order, keep), float("-inf"))
