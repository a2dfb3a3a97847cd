"""The update of one step: coordinate ascent over one forward pass (DESIGN.md, data flow).

One forward pass over the recorded sequences gives the final hidden states h. Then

    step A (token policy, theta):  log softmax(logits / tau_t)[y_t] with the recorded tau_t as
                                   constants; clipped GRPO loss; gradient into the model only.
    step B (temperature policy, phi): log pi_phi(c_t, z_t | h_t) from the head applied to
                                   h.detach(); clipped GRPO loss; gradient into the head only.

Both share the sequence's advantage A_i. The two losses touch disjoint parameters (h is detached
before the head), so one backward pass of their sum gives each policy exactly its own gradient;
each then takes its own AdamW step with its own learning rate.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from introllm.sampler.policies import TAMPO_TEMPERATURES
from introllm.sampler.records import Sequence
from introllm.sampler.scoring import SequenceBatch, collate, completion_hidden, completion_logprobs, token_logprobs

from .config import OptimConfig
from .losses import policy_loss, truncated_is_weights


class PolicyScorer(nn.Module):
    """Model and head as one module, so that one ``accelerate``/DDP wrapper syncs both."""

    def __init__(self, model: nn.Module, head: nn.Module | None, freeze_model: bool = False):
        super().__init__()
        self.model, self.head, self.freeze_model = model, head, freeze_model

    def forward(self, batch: SequenceBatch, with_tau_loglik: bool = False, with_entropy: bool = False) -> Scored:
        """Score the recorded sequences of ``batch`` (N rows, T completion tokens); see ``Scored``.

        With ``freeze_model`` (head-only training) the base runs under no_grad and the token
        log-probabilities are not computed at all (no vocabulary projection): step A is skipped."""
        if self.freeze_model:
            with torch.no_grad():
                h = completion_hidden(self.model, batch)
                entropy = completion_logprobs(self.model, h, batch, with_entropy=True)[1] if with_entropy else None
            u = self.head(h) if self.head is not None else None
            return Scored(None, u, tau_likelihoods(self.model, h, batch) if with_tau_loglik else None, entropy)
        h = completion_hidden(self.model, batch)
        logp, entropy = completion_logprobs(self.model, h, batch, with_entropy=with_entropy)
        u = self.head(h.detach()) if self.head is not None else None
        tau_loglik = tau_likelihoods(self.model, h.detach(), batch) if with_tau_loglik else None
        return Scored(logp, u, tau_loglik, entropy)


@dataclass
class Scored:
    """What ``PolicyScorer`` computes for a batch of N recorded sequences, T completion tokens."""

    logp: Tensor | None  # [N, T] log pi_theta(y_t) under the recorded tau; None in head-only training
    u: Tensor | None  # [N, T, 3] head outputs on detached h; None when the head is not trained
    tau_loglik: Tensor | None  # [N, K] mean log-likelihood at each TAMPO temperature, when asked
    entropy: Tensor | None  # [N, T] entropy of softmax(logits / tau_t) in nats (no grad), when asked


@torch.no_grad()
def tau_likelihoods(
    model: nn.Module, h: Tensor, batch: SequenceBatch, temperatures: Seq[float] = TAMPO_TEMPERATURES, chunk: int = 64
) -> Tensor:
    """Mean token log-likelihood of each completion at each temperature, float32 [N, K] (TAMPO)."""
    lm_head = model.get_output_embeddings()
    N, T = batch.targets.shape
    total = torch.zeros(N, len(temperatures), device=h.device)
    for start in range(0, T, chunk):
        sl = slice(start, start + chunk)
        logits = lm_head(h[:, sl]).float()
        m = batch.mask[:, sl]
        for k, tau in enumerate(temperatures):
            lp = token_logprobs(logits, batch.targets[:, sl], torch.full_like(m, tau))
            total[:, k] += (lp * m).sum(1)
    return total / batch.mask.sum(1, keepdim=True).clamp_min(1)


MISMATCH_TOLERANCE = 1e-3
"""|sampler log-prob - trainer log-prob| above which a token counts in ``logp_mismatch_frac``."""


@dataclass
class UpdateStats:
    loss_token: float = 0.0
    loss_temp: float = 0.0
    clip_frac: float = 0.0  # fraction of tokens whose model ratio was clipped
    clip_frac_temp: float = 0.0
    grad_norm_model: float = 0.0
    grad_norm_head: float = 0.0
    logp_mismatch: float = 0.0  # max |sampler's log-prob - trainer's| over tokens (first epoch)
    logp_mismatch_mean: float = 0.0  # mean of that |diff| over the tokens
    logp_mismatch_frac: float = 0.0  # fraction of tokens where it exceeds 1e-3
    temp_logp_mismatch: float = 0.0  # max |sampler's log pi_phi(c_t, z_t) - trainer's| over tokens (first epoch)
    temp_logp_mismatch_mean: float = 0.0  # mean of that |diff| over the tokens
    tis_weight_mean: float = 1.0  # mean truncated importance-sampling weight over the tokens
    tis_capped_frac: float = 0.0  # fraction of tokens whose weight was cut to tis_cap
    skipped: bool = False  # nothing to learn from (every token masked): no optimizer step
    tau_loglik: Tensor | None = None  # [N, K] with_tau_loglik: likelihoods under theta_old (TAMPO)
    entropy_sum: Tensor | None = None  # float64 [N] per-sequence sum of token entropies under the recorded tau


@dataclass
class RolloutGap:
    """How far the rollout engine's recorded log-probs are from the trainer's recompute (theta_old,
    recorded tau), as sums over the tokens of some micro-batches; ``+`` adds two, ``metrics`` turns
    them into UpdateStats' figures. The token log-probs (step A) and the head's action log-probs
    (step B) are compared alike; TIS weights are those of the token log-probs."""

    logp_max: float = 0.0  # max |diff| of token log-probs
    logp_sum: float = 0.0  # sum of |diff|
    logp_over: float = 0.0  # tokens with |diff| > MISMATCH_TOLERANCE
    tokens: float = 0.0  # tokens compared
    weight_sum: float = 0.0  # sum of TIS weights
    capped: float = 0.0  # tokens whose weight was cut to tis_cap
    temp_max: float = 0.0  # max |diff| of the head's action log-probs
    temp_sum: float = 0.0
    temp_tokens: float = 0.0

    def __add__(self, other: RolloutGap) -> RolloutGap:
        return RolloutGap(
            max(self.logp_max, other.logp_max),
            self.logp_sum + other.logp_sum,
            self.logp_over + other.logp_over,
            self.tokens + other.tokens,
            self.weight_sum + other.weight_sum,
            self.capped + other.capped,
            max(self.temp_max, other.temp_max),
            self.temp_sum + other.temp_sum,
            self.temp_tokens + other.temp_tokens,
        )

    def metrics(self, tis_cap: float) -> dict[str, float]:
        """The UpdateStats fields: logp_mismatch (max), _mean, _frac, tis_weight_mean, tis_capped_frac,
        temp_logp_mismatch (max), _mean. Means of nothing compared keep UpdateStats' defaults."""
        out = {"logp_mismatch": self.logp_max, "temp_logp_mismatch": self.temp_max}
        if self.temp_tokens:
            out["temp_logp_mismatch_mean"] = self.temp_sum / self.temp_tokens
        if self.tokens:
            out.update(logp_mismatch_mean=self.logp_sum / self.tokens, logp_mismatch_frac=self.logp_over / self.tokens)
            if tis_cap > 0:
                out.update(tis_weight_mean=self.weight_sum / self.tokens, tis_capped_frac=self.capped / self.tokens)
        return out


def rollout_gap(
    logp: Tensor | None,
    old_logp: Tensor,
    temp_logp: Tensor | None,
    old_temp_logp: Tensor,
    mask: Tensor,
    weights: Tensor | None,
    *,
    tis_cap: float,
) -> RolloutGap:
    """The gap of one micro-batch (all [n, T]; logp / temp_logp None where not computed): a pure
    function of the trainer's and the sampler's log-probs. Raises ValueError when token log-probs
    are to be compared but the rollout engine recorded none (NaN)."""
    gap = RolloutGap()
    if temp_logp is not None:
        diff = (temp_logp - old_temp_logp).abs() * mask
        gap.temp_max, gap.temp_sum, gap.temp_tokens = float(diff.max()), float(diff.sum()), float(mask.sum())
    if logp is not None:
        if bool(torch.isnan(old_logp).any()):
            raise ValueError(
                "the rollout engine recorded no token log-probs (NaN in Trace.logp): "
                "the trainer cannot compare or correct them (vLLM: record_logprobs=True)"
            )
        diff = (logp - old_logp).abs() * mask
        gap.logp_max, gap.logp_sum, gap.tokens = float(diff.max()), float(diff.sum()), float(mask.sum())
        gap.logp_over = float(((diff > MISMATCH_TOLERANCE).float() * mask).sum())
        if weights is not None:
            gap.weight_sum = float((weights * mask).sum())
            gap.capped = float(((weights >= tis_cap).float() * mask).sum())
    return gap


def _trainable(module: nn.Module | None) -> list[nn.Parameter]:
    return [] if module is None else [p for p in module.parameters() if p.requires_grad]


def update(
    scorer: nn.Module,
    model: nn.Module,
    head: nn.Module | None,
    temp_policy,
    sequences: list[Sequence],
    adv: Tensor,
    *,
    optimizers: dict[str, torch.optim.Optimizer],
    optim: OptimConfig,
    pad_id: int,
    num_sequences: int | None = None,
    ref_model: nn.Module | None = None,
    accelerator=None,
    with_tau_loglik: bool = False,
) -> UpdateStats:
    """Steps A and B on this process's sequences (with their advantages [N]).

    ``scorer`` is the (possibly DDP-wrapped) PolicyScorer over ``model`` and ``head``; ``head`` is
    None for methods whose temperatures are not learned, ``temp_policy`` the head-driven sampler
    policy whose ``log_prob`` scores the recorded (c_t, z_t). ``optim`` is the run's [optim]
    section (clip_eps, max_grad_norm, micro_batch_size, ppo_epochs, mask_truncated, kl_coef with
    ``ref_model``, tis_cap). Gradients of all micro-batches are accumulated before each optimizer
    step; every loss is divided by ``num_sequences`` (default: len(sequences)), so the accumulated
    gradient equals the full batch's.

    Rollout consistency: on the first epoch the trainer's recomputed token log-probs
    (theta_old, recorded tau) are compared with those the rollout engine reported
    (``Trace.logp``): max / mean |diff| and the fraction over ``MISMATCH_TOLERANCE`` go into the
    stats, and min(exp(diff), tis_cap) weights each token's loss terms (losses.truncated_is_weights).
    The head's action log-probs (``Trace.temp_logp``) are compared the same way
    (temp_logp_mismatch*), for the record: a rollout engine in another precision sees slightly
    other hidden states; step B takes the token's TIS weight, not a ratio of its own
    (``RolloutGap``, ``rollout_gap``). ``stats.entropy_sum`` holds each sequence's entropy: its
    trace's, or where the trace has NaN (the vLLM engine computes none) the trainer's recompute under
    the recorded tau. Nothing is written back into the sequences.
    """
    device = next(model.parameters()).device
    num_sequences = num_sequences or len(sequences)
    mb = optim.micro_batch_size
    micro = [list(range(i, min(i + mb, len(sequences)))) for i in range(0, len(sequences), mb)]
    batches = []
    for rows in micro:
        b = collate([sequences[i] for i in rows], pad_id=pad_id).to(device)
        if optim.mask_truncated:
            keep = torch.tensor([sequences[i].finish_reason != "length" for i in rows], device=device)
            b.mask = b.mask * keep[:, None].float()
        batches.append((b, adv[rows].to(device)))
    need_entropy = [any(math.isnan(e) for e in sequences[i].trace.entropy) for i in range(len(sequences))]
    stats = UpdateStats()
    num_tokens = sum(float(b.mask.sum()) for b, _ in batches)
    if accelerator is not None:
        num_tokens = float(accelerator.reduce(torch.tensor(num_tokens, device=device), "sum"))
    if num_tokens == 0:
        stats.skipped = True
        if with_tau_loglik:
            with torch.no_grad():
                stats.tau_loglik = torch.cat([scorer(b, True).tau_loglik for b, _ in batches]).cpu()
        return stats
    old: list[tuple[Tensor | None, Tensor | None, Tensor | None]] = []  # theta_old logp, phi_old logp, TIS weights
    ref = []
    if ref_model is not None and optim.kl_coef > 0:
        with torch.no_grad():
            for b, _ in batches:
                ref.append(completion_logprobs(ref_model, completion_hidden(ref_model, b), b)[0])
    clipped_tokens = clipped_temp_tokens = 0.0
    gap = RolloutGap()
    entropy_sum = torch.tensor([sum(s.trace.entropy) for s in sequences], dtype=torch.float64)
    likelihoods: list[Tensor] = []
    for epoch in range(optim.ppo_epochs):
        for k, (b, a) in enumerate(batches):
            last = k == len(batches) - 1
            sync = contextlib.nullcontext() if last or accelerator is None else accelerator.no_sync(scorer)
            rows = micro[k]
            with sync:
                first = epoch == 0
                out = scorer(b, with_tau_loglik and first, first and any(need_entropy[i] for i in rows))
                logp, u = out.logp, out.u
                temp_logp = temp_policy.log_prob(u, b.updated, b.z) if u is not None else None
                if first:  # theta_old = theta, phi_old = phi: ratios exactly 1 on this pass
                    if out.tau_loglik is not None:
                        likelihoods.append(out.tau_loglik.cpu())
                    if out.entropy is not None:
                        sums = (out.entropy * b.mask).sum(1).double().cpu()
                        for j, i in enumerate(rows):
                            if need_entropy[i]:
                                entropy_sum[i] = sums[j]
                    logp_d = None if logp is None else logp.detach()
                    weights = (
                        truncated_is_weights(logp_d, b.old_logp, optim.tis_cap)
                        if logp_d is not None and optim.tis_cap > 0
                        else None
                    )
                    temp_d = None if temp_logp is None else temp_logp.detach()
                    gap = gap + rollout_gap(
                        logp_d, b.old_logp, temp_d, b.old_temp_logp, b.mask, weights, tis_cap=optim.tis_cap
                    )
                    old.append((logp_d, temp_d, weights))
                old_logp, old_temp, weights = old[k]
                loss = torch.zeros((), device=device)
                if logp is not None:  # step A (skipped in head-only training: the base is frozen)
                    loss_a, clip_a = policy_loss(
                        logp,
                        old_logp,
                        a,
                        b.mask,
                        eps=optim.clip_eps,
                        num_sequences=num_sequences,
                        ref_logp=ref[k] if ref else None,
                        kl_coef=optim.kl_coef,
                        is_weights=weights,
                    )
                    loss = loss_a
                    stats.loss_token += float(loss_a.detach()) / optim.ppo_epochs
                    clipped_tokens += float((clip_a.float() * b.mask).sum())
                if temp_logp is not None:
                    loss_b, clip_b = policy_loss(
                        temp_logp,
                        old_temp,
                        a,
                        b.mask,
                        eps=optim.clip_eps,
                        num_sequences=num_sequences,
                        is_weights=weights,
                    )
                    loss = loss + loss_b
                    stats.loss_temp += float(loss_b.detach()) / optim.ppo_epochs
                    clipped_temp_tokens += float((clip_b.float() * b.mask).sum())
                if loss.requires_grad:
                    (accelerator.backward(loss) if accelerator is not None else loss.backward())
        stats.grad_norm_model = _step(optimizers.get("optimizer_model"), _trainable(model), optim.max_grad_norm)
        stats.grad_norm_head = _step(optimizers.get("optimizer_head"), _trainable(head), optim.max_grad_norm)
    stats.tau_loglik = torch.cat(likelihoods) if likelihoods else None
    stats.entropy_sum = entropy_sum
    for name, value in gap.metrics(optim.tis_cap).items():
        setattr(stats, name, value)
    local_tokens = sum(float(b.mask.sum()) for b, _ in batches) * optim.ppo_epochs
    stats.clip_frac = clipped_tokens / max(local_tokens, 1)
    stats.clip_frac_temp = clipped_temp_tokens / max(local_tokens, 1)
    return stats


def _step(optimizer: torch.optim.Optimizer | None, params: list[nn.Parameter], max_grad_norm: float) -> float:
    """Clip, step, zero; returns the gradient norm before clipping."""
    if optimizer is None or not params:
        return 0.0
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(grads, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.grad) for g in grads]))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
