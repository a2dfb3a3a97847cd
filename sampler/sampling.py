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
    sampled, lse, entropy = draw(x, u, filtered=filtering)
    tokens = torch.where(greedy, logits.argmax(dim=-1), sampled) if bool(greedy.any()) else sampled
    logp = x.gather(-1, tokens[:, None]).squeeze(-1) - lse
    top_ids = top_logp = None
    if num_top > 0:
        top_x, top_ids = x.topk(num_top, dim=-1)
        top_logp = top_x - lse[:, None]
    return Draw(tokens, logp, entropy, top_ids, top_logp)


CDF_BLOCK = 256
"""Tokens per block of ``inverse_cdf``'s two-level search."""


def draw(x: Tensor, u: Tensor, filtered: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The inverse-CDF draw from softmax(x) with the uniforms u, and what is reported with it.

    x: float32 [B, V] tempered (and filtered: -inf) logits; u: [B] in (0, 1); ``filtered``: x may
    hold -inf entries, which get probability 0. Returns (tokens int64 [B], the log normaliser lse
    float32 [B], the entropy float32 [B] in nats); a token's log-prob is x[token] - lse.

    Five passes over [B, V]: the maximum m, d = max(x - m, -UNDERFLOW_NATS) (the floor of
    ``floored``), the unnormalised weights e = exp(d), their block sums and the dot e.d; the draw
    searches the blocks, then one block (``inverse_cdf``), and H = log S - (e.d) / S with S = sum e
    (= lse - sum p x). The same tokens as a float64 softmax's CDF up to float32 rounding at a
    boundary (tests/test_engine.py); the block sums cost a tenth of a [B, V] cumsum (0.07 against
    0.89 ms at batch 16, one AVX2 thread)."""
    m = x.amax(dim=-1, keepdim=True)
    d = torch.sub(x, m).clamp_(min=-UNDERFLOW_NATS)
    e = torch.exp(d)
    if filtered:  # a filtered token has p = 0, not the floor's
        e.masked_fill_(x.isneginf(), 0.0)
    tokens, total = inverse_cdf(e, u)
    log_total = total.log()
    entropy = log_total - torch.linalg.vecdot(e, d) / total
    return tokens, m.squeeze(-1) + log_total, entropy


def inverse_cdf(weights: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the first index i with weights[:i + 1].sum() >= u * weights.sum(), and that sum.

    weights: float32 [B, V], >= 0, each row with some positive weight; u: [B] in (0, 1). Returns
    (int64 [B], float32 [B]). Two levels, so that no [B, V] cumulative sum is needed: the sums of
    blocks of ``CDF_BLOCK`` weights and their running total find the block, a cumulative sum within
    that block finds the index. The index always has positive weight (a zero-weight index never
    completes a sum), also where float rounding makes a block's inner sum differ from its block sum.
    """
    rows, vocab = weights.shape
    pad = -vocab % CDF_BLOCK
    blocks = (torch.nn.functional.pad(weights, (0, pad)) if pad else weights).view(rows, -1, CDF_BLOCK)
    running = blocks.sum(-1).cumsum(-1)  # [B, blocks]
    total = running[:, -1]
    target = (u * total)[:, None].contiguous()
    b = torch.searchsorted(running, target).clamp_max(running.shape[-1] - 1)  # [B, 1]
    before = torch.where(b > 0, running.gather(-1, (b - 1).clamp_min(0)), 0.0)
    inner = blocks.gather(1, b[:, :, None].expand(rows, 1, CDF_BLOCK)).squeeze(1).cumsum(-1)  # [B, CDF_BLOCK]
    rest = torch.minimum(target - before, inner[:, -1:]).contiguous()
    j = torch.searchsorted(inner, rest).clamp_max(CDF_BLOCK - 1)
    return (b * CDF_BLOCK + j).squeeze(-1).clamp_max(vocab - 1), total


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
