"""Counter-based random numbers for decoding: Philox4x32-10, vectorised over the batch.

Every random number the sampler uses is a pure function of ``(seed, step, stream)``: the request's
seed, the index of the generated token, and the sample's index within the request. We do not use a
``torch.Generator`` because a generator's draws depend on how many numbers were drawn before, so a
sequence's tokens would depend on which other sequences shared its batch. With counters:

- a sequence gives the same tokens whether it is decoded alone, in a batch, or joins a running
  batch in the server (continuous batching);
- CPU and CUDA draw bit-identical uniforms (the arithmetic is integer);
- resuming training needs no generator state: a step's draws are fixed by its counters.

Philox4x32-10 is the generator of Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"
(SC'11), also used by cuRAND and by PyTorch's CUDA generator; it is checked here against the
known-answer vectors published with Random123.

Each (seed, step, stream) gets ``NUM_UNIFORMS`` uniforms, laid out in fixed slots (``SLOT_*``) so
that each use of randomness in a step reads its own numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments

GAMMA_TRIES = 8
"""Candidates drawn for one Marsaglia-Tsang gamma variate (acceptance >= 0.95 each, so all eight are
rejected with probability < 1e-10; that case returns the distribution's mode region, see gamma_log)."""
_GAMMA_SLOTS = 2 * GAMMA_TRIES + 1

SLOT_TOKEN = 0  # inverse-CDF draw of the next token
SLOT_GATE = 1  # Bernoulli gate c_t
SLOT_CHOICE = 2  # categorical choice (TAMPO's temperature)
SLOT_BETA_A = 3  # gamma variate for the Beta's alpha side: _GAMMA_SLOTS numbers
SLOT_BETA_B = SLOT_BETA_A + _GAMMA_SLOTS  # gamma variate for the beta side
NUM_UNIFORMS = 4 * math.ceil((SLOT_BETA_B + _GAMMA_SLOTS) / 4)  # whole Philox blocks of 4


def philox4x32(counter: Tensor, key: Tensor, rounds: int = 10) -> Tensor:
    """Philox4x32 block function.

    counter: int64 [..., 4] and key: int64 [..., 2], each word in [0, 2**32).
    Returns int64 [..., 4] with words in [0, 2**32).

    The 32x32-bit products are formed in int64: a product below 2**64 wraps into the sign bit but
    keeps its 64-bit pattern, so masking after the (arithmetic) shift recovers both halves exactly.

    >>> z = torch.zeros(4, dtype=torch.long)
    >>> [f"{w:08x}" for w in philox4x32(z, z[:2]).tolist()]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    x0, x1, x2, x3 = counter.unbind(-1)
    k0, k1 = key.unbind(-1)
    for r in range(rounds):
        if r:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        p0 = x0 * _M0
        p1 = x2 * _M1
        hi0, lo0 = (p0 >> 32) & _MASK32, p0 & _MASK32
        hi1, lo1 = (p1 >> 32) & _MASK32, p1 & _MASK32
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return torch.stack((x0, x1, x2, x3), dim=-1)


def uniforms(seed: Tensor, step: Tensor, stream: Tensor, num: int = NUM_UNIFORMS) -> Tensor:
    """``num`` uniform floats in the open interval (0, 1) per row.

    seed, step, stream: int64 [B] (seed uses all 64 bits; step and stream their low 32).
    Returns float32 [B, num]. Values are (k + 0.5) / 2**23 for 23-bit k: never 0 or 1, so logs of
    them are finite.
    """
    num_blocks = math.ceil(num / 4)
    batch = seed.shape[0]
    block = torch.arange(num_blocks, device=seed.device, dtype=torch.long)
    counter = torch.stack(
        (
            (step & _MASK32)[:, None].expand(batch, num_blocks),
            block[None, :].expand(batch, num_blocks),
            (stream & _MASK32)[:, None].expand(batch, num_blocks),
            torch.zeros(batch, num_blocks, dtype=torch.long, device=seed.device),
        ),
        dim=-1,
    )  # [B, blocks, 4]
    key = torch.stack((seed & _MASK32, (seed >> 32) & _MASK32), dim=-1)[:, None, :]  # [B, 1, 2]
    bits = philox4x32(counter, key.expand(batch, num_blocks, 2)).reshape(batch, num_blocks * 4)
    return ((bits[:, :num] >> 9).float() + 0.5) * (1.0 / (1 << 23))


UNIFORM_CHUNK = 64
"""Steps of random numbers a decoder draws at once per sequence (``uniforms_ahead``). The numbers are
a function of (seed, step, stream) only, so drawing them ahead changes nothing but the cost: one
Philox call per sequence per 64 steps instead of one per step, whose ~100 small tensor ops cost
0.5 ms, 6 % of a batch-1 llama.cpp step (AVX2 EPYC)."""


def uniforms_ahead(seed: Tensor, first: Tensor, stream: Tensor, steps: int = UNIFORM_CHUNK) -> Tensor:
    """``uniforms`` of steps first .. first + steps - 1 of each row, in one Philox call.

    seed, first, stream: int64 [N]. Returns float32 [N, steps, NUM_UNIFORMS]; entry [i, j] equals
    ``uniforms(seed[i:i+1], first[i:i+1] + j, stream[i:i+1])[0]``."""
    num = seed.shape[0]
    offset = torch.arange(steps, device=seed.device).repeat(num)
    rand = uniforms(
        seed.repeat_interleave(steps), first.repeat_interleave(steps) + offset, stream.repeat_interleave(steps)
    )
    return rand.view(num, steps, -1)


def normals(rand: Tensor) -> Tensor:
    """Standard normals from uniforms by Box-Muller: [B, 2m] uniforms -> [B, 2m] normals."""
    u1, u2 = rand.chunk(2, dim=-1)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    return torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)


def gamma_log(alpha: Tensor, rand: Tensor) -> Tensor:
    """log of a Gamma(alpha, 1) draw, from ``2 * GAMMA_TRIES + 1`` uniforms per row.

    alpha: float32 [B] > 0; rand: float32 [B, 2 * GAMMA_TRIES + 1]. Returns float32 [B].

    Marsaglia & Tsang (2000) for shape >= 1, with a fixed number of candidates so the whole batch
    is sampled without a data-dependent loop; the first accepted candidate is kept. Shapes below 1
    use the boost Gamma(a) = Gamma(a + 1) * U**(1/a), kept in log space so that shapes as small as
    1e-6 give a very negative log instead of an underflowed 0.
    """
    boost = alpha < 1.0
    shape = torch.where(boost, alpha + 1.0, alpha)
    d = shape - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    x = normals(rand[:, :GAMMA_TRIES])  # [B, K]
    rand_accept = rand[:, GAMMA_TRIES : 2 * GAMMA_TRIES]  # [B, K]
    v = (1.0 + c[:, None] * x) ** 3
    log_v = torch.log(v.clamp_min(1e-30))
    accept = (v > 0) & (torch.log(rand_accept) < 0.5 * x * x + d[:, None] * (1.0 - v + log_v))
    first = accept.to(torch.int8).argmax(dim=-1, keepdim=True)  # first accepted, 0 if none
    chosen_log_v = torch.where(accept.any(dim=-1), log_v.gather(-1, first).squeeze(-1), 0.0)
    log_g = torch.log(d) + chosen_log_v
    return torch.where(boost, log_g + torch.log(rand[:, 2 * GAMMA_TRIES]) / alpha, log_g)


def beta_sample(alpha: Tensor, beta: Tensor, rand: Tensor) -> Tensor:
    """A Beta(alpha, beta) draw per row from ``rand[:, SLOT_BETA_A:]``: z = Ga / (Ga + Gb).

    Computed as sigmoid(log Ga - log Gb), which stays finite (0 or 1 at worst) when one of the
    gamma draws underflows. Callers clamp z away from {0, 1} before using or scoring it.
    """
    rows = alpha.shape[0]
    u_a = rand[:, SLOT_BETA_A : SLOT_BETA_A + _GAMMA_SLOTS]
    u_b = rand[:, SLOT_BETA_B : SLOT_BETA_B + _GAMMA_SLOTS]
    log_g = gamma_log(torch.cat((alpha, beta)), torch.cat((u_a, u_b)))  # both sides in one pass
    return torch.sigmoid(log_g[:rows] - log_g[rows:])


def gamma_log_one(alpha: float, rand: Seq[float]) -> float:
    """``gamma_log`` for one row in Python floats (float64): the same candidates, the same
    acceptance test, the same boost, read from the same ``2 * GAMMA_TRIES + 1`` uniforms; it stops
    at the first accepted candidate instead of computing all of them.

    Equal to ``gamma_log`` to float32 rounding (tests/test_rng.py), except where float32 and
    float64 fall on two sides of an acceptance boundary (probability ~1e-7 a candidate)."""
    shape = alpha + 1.0 if alpha < 1.0 else alpha
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    half = GAMMA_TRIES // 2
    chosen_log_v = 0.0  # all rejected: the mode region, as gamma_log
    for k in range(GAMMA_TRIES):  # normals(): candidate k pairs uniforms (k mod half, k mod half + half)
        radius = math.sqrt(-2.0 * math.log(rand[k % half]))
        angle = (2.0 * math.pi) * rand[k % half + half]
        x = radius * (math.cos(angle) if k < half else math.sin(angle))
        v = (1.0 + c * x) ** 3
        if v > 0:
            log_v = math.log(v)
            if math.log(rand[GAMMA_TRIES + k]) < 0.5 * x * x + d * (1.0 - v + log_v):
                chosen_log_v = log_v
                break
    log_g = math.log(d) + chosen_log_v
    return log_g + math.log(rand[2 * GAMMA_TRIES]) / alpha if alpha < 1.0 else log_g


def beta_sample_one(alpha: float, beta: float, rand: Seq[float]) -> float:
    """``beta_sample`` for one row in Python floats, from the same uniforms (``rand``: that row's
    ``NUM_UNIFORMS``): what a batch of one uses (``policies._HeadPolicy._act_one``), where
    tensor operations on one element cost more than the arithmetic."""
    log_ga = gamma_log_one(alpha, rand[SLOT_BETA_A : SLOT_BETA_A + _GAMMA_SLOTS])
    log_gb = gamma_log_one(beta, rand[SLOT_BETA_B : SLOT_BETA_B + _GAMMA_SLOTS])
    diff = log_ga - log_gb
    return 1.0 / (1.0 + math.exp(-diff)) if diff > -700.0 else 0.0
