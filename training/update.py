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
from dataclasses import dataclass
from typing import Sequence as Seq

import torch
from torch import Tensor, nn

from introllm.sampler.policies import TAMPO_TEMPERATURES
from introllm.sampler.records import Sequence
from introllm.sampler.scoring import SequenceBatch, collate, completion_hidden, completion_logprobs, token_logprobs

from .losses import policy_loss


class PolicyScorer(nn.Module):
    """Model and head as one module, so that one ``accelerate``/DDP wrapper syncs both."""

    def __init__(self, model: nn.Module, head: nn.Module | None, freeze_model: bool = False):
        super().__init__()
        self.model, self.head, self.freeze_model = model, head, freeze_model

    def forward(self, batch: SequenceBatch, with_tau_loglik: bool = False):
        """-> (logp [N, T] under the recorded tau, or None with ``freeze_model``; head outputs
        u [N, T, 3] on detached h or None; mean log-likelihood of each sequence at each TAMPO
        temperature [N, K] or None).

        With ``freeze_model`` (head-only training) the base runs under no_grad and the token
        log-probabilities are not computed at all (no vocabulary projection): step A is skipped."""
        if self.freeze_model:
            with torch.no_grad():
                h = completion_hidden(self.model, batch)
            u = self.head(h) if self.head is not None else None
            return None, u, (tau_likelihoods(self.model, h, batch) if with_tau_loglik else None)
        h = completion_hidden(self.model, batch)
        logp, _ = completion_logprobs(self.model, h, batch)
        u = self.head(h.detach()) if self.head is not None else None
        tau_loglik = tau_likelihoods(self.model, h.detach(), batch) if with_tau_loglik else None
        return logp, u, tau_loglik


@torch.no_grad()
def tau_likelihoods(model: nn.Module, h: Tensor, batch: SequenceBatch, temperatures: Seq[float] = TAMPO_TEMPERATURES, chunk: int = 64) -> Tensor:
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


@dataclass
class UpdateStats:
    loss_token: float = 0.0
    loss_temp: float = 0.0
    clip_frac: float = 0.0  # fraction of tokens whose model ratio was clipped
    clip_frac_temp: float = 0.0
    grad_norm_model: float = 0.0
    grad_norm_head: float = 0.0
    logp_mismatch: float = 0.0  # max |sampler's log-prob - trainer's| over tokens (first epoch)
    skipped: bool = False  # nothing to learn from (every token masked): no optimizer step
    tau_loglik: Tensor | None = None  # [N, K] with_tau_loglik: likelihoods under theta_old (TAMPO)


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
    pad_id: int,
    clip_eps: float,
    max_grad_norm: float,
    micro_batch_size: int,
    ppo_epochs: int = 1,
    mask_truncated: bool = False,
    num_sequences: int | None = None,
    ref_model: nn.Module | None = None,
    kl_coef: float = 0.0,
    accelerator=None,
    with_tau_loglik: bool = False,
) -> UpdateStats:
    """Steps A and B on this process's sequences (with their advantages [N]).

    ``scorer`` is the (possibly DDP-wrapped) PolicyScorer over ``model`` and ``head``; ``head`` is
    None for methods whose temperatures are not learned, ``temp_policy`` the head-driven sampler
    policy whose ``log_prob`` scores the recorded (c_t, z_t). Gradients of all micro-batches are
    accumulated before each optimizer step; every loss is divided by ``num_sequences`` (default:
    len(sequences)), so the accumulated gradient equals the full batch's.
    """
    device = next(model.parameters()).device
    num_sequences = num_sequences or len(sequences)
    micro = [list(range(i, min(i + micro_batch_size, len(sequences)))) for i in range(0, len(sequences), micro_batch_size)]
    batches = []
    for rows in micro:
        b = collate([sequences[i] for i in rows], pad_id=pad_id).to(device)
        if mask_truncated:
            keep = torch.tensor([sequences[i].finish_reason != "length" for i in rows], device=device)
            b.mask = b.mask * keep[:, None].float()
        batches.append((b, adv[rows].to(device)))
    stats = UpdateStats()
    num_tokens = sum(float(b.mask.sum()) for b, _ in batches)
    if accelerator is not None:
        num_tokens = float(accelerator.reduce(torch.tensor(num_tokens, device=device), "sum"))
    if num_tokens == 0:
        stats.skipped = True
        if with_tau_loglik:
            with torch.no_grad():
                stats.tau_loglik = torch.cat([scorer(b, True)[2] for b, _ in batches]).cpu()
        return stats
    old: list[tuple[Tensor, Tensor | None]] = []
    ref = []
    if ref_model is not None and kl_coef > 0:
        with torch.no_grad():
            for b, _ in batches:
                ref.append(completion_logprobs(ref_model, completion_hidden(ref_model, b), b)[0])
    clipped_tokens = clipped_temp_tokens = 0.0
    likelihoods: list[Tensor] = []
    for epoch in range(ppo_epochs):
        for k, (b, a) in enumerate(batches):
            last = k == len(batches) - 1
            sync = contextlib.nullcontext() if last or accelerator is None else accelerator.no_sync(scorer)
            with sync:
                logp, u, tau_loglik = scorer(b, with_tau_loglik and epoch == 0)
                temp_logp = temp_policy.log_prob(u, b.updated, b.z) if u is not None else None
                if epoch == 0:  # theta_old = theta, phi_old = phi: ratios exactly 1 on this pass
                    old.append((None if logp is None else logp.detach(), None if temp_logp is None else temp_logp.detach()))
                    if tau_loglik is not None:
                        likelihoods.append(tau_loglik.cpu())
                    if logp is not None:
                        stats.logp_mismatch = max(stats.logp_mismatch, float(((logp.detach() - b.old_logp).abs() * b.mask).max()))
                old_logp, old_temp = old[k]
                loss = torch.zeros((), device=device)
                if logp is not None:  # step A (skipped in head-only training: the base is frozen)
                    loss_a, clip_a = policy_loss(
                        logp, old_logp, a, b.mask, eps=clip_eps, num_sequences=num_sequences,
                        ref_logp=ref[k] if ref else None, kl_coef=kl_coef,
                    )
                    loss = loss_a
                    stats.loss_token += float(loss_a.detach()) / ppo_epochs
                    clipped_tokens += float((clip_a.float() * b.mask).sum())
                if temp_logp is not None:
                    loss_b, clip_b = policy_loss(temp_logp, old_temp, a, b.mask, eps=clip_eps, num_sequences=num_sequences)
                    loss = loss + loss_b
                    stats.loss_temp += float(loss_b.detach()) / ppo_epochs
                    clipped_temp_tokens += float((clip_b.float() * b.mask).sum())
                if loss.requires_grad:
                    (accelerator.backward(loss) if accelerator is not None else loss.backward())
        stats.grad_norm_model = _step(optimizers.get("optimizer_model"), _trainable(model), max_grad_norm)
        stats.grad_norm_head = _step(optimizers.get("optimizer_head"), _trainable(head), max_grad_norm)
    stats.tau_loglik = torch.cat(likelihoods) if likelihoods else None
    local_tokens = sum(float(b.mask.sum()) for b, _ in batches) * ppo_epochs
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
