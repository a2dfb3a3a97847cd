"""Re-scoring recorded sequences with one full forward pass (paper §4.3, "on-policy likelihood
recomputation"): the trainer's view of what the engine did.

The invariant this module exists for: the log-probability recomputed here for a recorded action
equals the one the sampler had when it took it (same tau, same clamped z). The tests check it for
every policy, padded batches included.

Layout of a ``SequenceBatch``: prompts are left-padded and completions right-padded, so every
completion starts at column P (the longest prompt) and token t of a completion is predicted by
the hidden state at column P - 1 + t:

    [pad pad p0 p1 p2 | y0 y1 y2 pad]      row with a 3-token prompt, P = 5
    [p0  p1  p2 p3 p4 | y0 y1 pad pad]
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .records import Sequence
from .sampling import floored, tempered


@dataclass
class SequenceBatch:
    """Recorded sequences as padded tensors. N rows, L = P + T columns."""

    input_ids: Tensor  # int64 [N, L]
    attention_mask: Tensor  # int64 [N, L]
    position_ids: Tensor  # int64 [N, L]
    prompt_len: int  # P: completions start at this column
    targets: Tensor  # int64 [N, T] generated tokens y_t
    mask: Tensor  # float32 [N, T] 1 for generated tokens, 0 for padding
    tau: Tensor  # float32 [N, T] recorded temperatures
    updated: Tensor  # bool [N, T] recorded c_t
    z: Tensor  # float32 [N, T] recorded (clamped) z_t
    old_logp: Tensor  # float32 [N, T] token log-probs the sampler recorded
    old_temp_logp: Tensor  # float32 [N, T] temperature-action log-probs the sampler recorded

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(**{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()})


def collate(seqs: Seq[Sequence], pad_id: int = 0) -> SequenceBatch:
    """Pack finished sequences (each with at least one generated token) into a SequenceBatch."""
    if not seqs:
        raise ValueError("no sequences to collate")
    P = max(len(s.prompt_ids) for s in seqs)
    T = max(len(s.token_ids) for s in seqs)
    N = len(seqs)
    ids = torch.full((N, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros(N, P + T, dtype=torch.long)
    f32 = lambda: torch.zeros(N, T, dtype=torch.float32)  # noqa: E731
    targets, mask, tau, z, old_logp, old_temp = (
        torch.full((N, T), pad_id, dtype=torch.long),
        f32(),
        f32(),
        f32(),
        f32(),
        f32(),
    )
    updated = torch.zeros(N, T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        p, t = len(s.prompt_ids), len(s.token_ids)
        ids[i, P - p : P] = torch.tensor(s.prompt_ids)
        ids[i, P : P + t] = torch.tensor(s.token_ids)
        attn[i, P - p : P + t] = 1
        targets[i, :t] = torch.tensor(s.token_ids)
        mask[i, :t] = 1
        tau[i, :t] = torch.tensor(s.trace.tau)
        updated[i, :t] = torch.tensor(s.trace.updated)
        z[i, :t] = torch.tensor(s.trace.z)
        old_logp[i, :t] = torch.tensor(s.trace.logp)
        old_temp[i, :t] = torch.tensor(s.trace.temp_logp)
    positions = (attn.cumsum(-1) - 1).clamp_min(0)
    return SequenceBatch(ids, attn, positions, P, targets, mask, tau, updated, z, old_logp, old_temp)


def token_logprobs(logits: Tensor, targets: Tensor, tau: Tensor) -> Tensor:
    """log softmax(logits / tau)[target], in float32; tau = 0 (greedy) is scored at tau = 1, as the
    sampler reports it.

    logits: [..., V]; targets: int64 [...]; tau: [...]. Returns float32 [...].

    >>> token_logprobs(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), torch.tensor([1.0])).exp()
    tensor([0.5000])
    """
    x = tempered(logits, tau)
    return x.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(floored(x), dim=-1)


def token_entropy(logits: Tensor, tau: Tensor) -> Tensor:
    """Entropy of softmax(logits / tau) in nats, float32 [...]; tau = 0 counts as tau = 1."""
    logp = F.log_softmax(tempered(logits, tau), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def completion_hidden(model: nn.Module, batch: SequenceBatch) -> Tensor:
    """Final hidden states h predicting each completion token: [N, T, d] (one forward pass)."""
    out = model.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False
    )
    T = batch.targets.shape[1]
    return out.last_hidden_state[:, batch.prompt_len - 1 : batch.prompt_len - 1 + T]


def completion_logprobs(
    model: nn.Module, h: Tensor, batch: SequenceBatch, *, chunk: int = 128, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Token log-probs (and entropies) of the completions under the recorded tau: [N, T] each.

    The vocabulary projection runs ``chunk`` positions at a time, so at most one [N, chunk, V]
    block of logits exists at once instead of the full [N, T, V] in float32. Under autograd each
    chunk is activation-checkpointed: its logits are recomputed in the backward pass rather than
    kept.
    """
    lm_head = model.get_output_embeddings()
    grad = torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in lm_head.parameters()))

    def chunk_logp(h_chunk: Tensor, targets: Tensor, tau: Tensor) -> Tensor:
        return token_logprobs(lm_head(h_chunk), targets, tau)

    logps, ents = [], []
    for start in range(0, h.shape[1], chunk):
        sl = slice(start, start + chunk)
        args = (h[:, sl], batch.targets[:, sl], batch.tau[:, sl])
        if grad:
            logps.append(torch.utils.checkpoint.checkpoint(chunk_logp, *args, use_reentrant=False))
        else:
            logps.append(chunk_logp(*args))
        if with_entropy:
            with torch.no_grad():
                ents.append(token_entropy(lm_head(h[:, sl]), batch.tau[:, sl]))
    return torch.cat(logps, 1), (torch.cat(ents, 1) if with_entropy else None)
