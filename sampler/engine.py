"""Batched, KV-cached decoding with a temperature policy in the loop.

Per step and per sequence (DESIGN.md, data flow):

    forward -> final hidden state h_t -> policy -> tau_t (and c_t, z_t) -> logits / tau_t -> sample y_t

The engine takes token ids and returns token ids with one record per generated token; it knows
nothing of tokenizers or HTTP. ``Engine.generate`` runs a fixed set of prompts to completion (the
trainer's rollouts, the CLI). ``DecodeBatch`` is the step-level interface underneath it: sequences
can join (``add``) and leave (``cancel``) between steps, which is what the server's continuous
batching uses.

Sampling is exact inverse-CDF sampling from softmax(logits / tau) (optionally top-k / top-p
filtered, after the temperature) with counter-based random numbers (see rng), so a sequence's
tokens depend only on its seed, never on its batch neighbours.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence as Seq

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import BatchKVCache
from .head import TemperatureHead
from .kernels import packed_linears
from .policies import TemperaturePolicy, build_policy
from .rng import SLOT_TOKEN, uniforms


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request. Validated on construction."""

    max_new_tokens: int = 256
    """Most tokens to generate per sample."""
    policy: str = "learned"
    """Temperature policy spec, see ``policies`` (``learned``, ``fixed:0.7``, ``greedy``, ``ead``...)."""
    seed: int | None = None
    """Seed of the request's random numbers; its samples draw from distinct streams of it. None: random."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end a sequence (the stop token is kept in the output)."""
    ignore_eos: bool = False
    """Keep going past the model's end-of-sequence tokens."""
    top_k: int = 0
    """Keep only the k most likely tokens after the temperature; 0 = off. Off in training."""
    top_p: float = 1.0
    """Keep the smallest set of tokens with this much probability after the temperature; 1 = off."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclass
class Trace:
    """Per generated token, in order: what the temperature policy did and what the sampler saw."""

    tau: list[float] = field(default_factory=list)  # temperature used (0 = greedy)
    updated: list[bool] = field(default_factory=list)  # c_t: a new temperature was chosen here
    z: list[float] = field(default_factory=list)  # Beta draw (clamped) where updated, else 0
    temp_logp: list[float] = field(default_factory=list)  # log pi_phi(c_t, z_t | h_t); 0 without a head
    logp: list[float] = field(default_factory=list)  # log-prob of the token under its sampling distribution
    entropy: list[float] = field(default_factory=list)  # entropy of that distribution (nats)


@dataclass
class Sequence:
    """One sample: grows by one token per step until ``finish_reason`` is set."""

    request_id: Hashable
    sample_index: int
    prompt_ids: list[int]
    seed: int
    policy: str
    token_ids: list[int] = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)
    finish_reason: str | None = None  # "stop" (EOS or a stop token), "length", or "cancelled"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


def sample_tokens(
    logits: Tensor, tau: Tensor, u: Tensor, top_k: Tensor | None = None, top_p: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample one token per row from softmax(logits / tau), by inverse CDF with the uniforms u.

    logits: float32 [B, V]; tau: [B] (0 = greedy: argmax, logp 0, entropy 0); u: [B] in (0, 1);
    top_k: int64 [B] (0 = off), top_p: float32 [B] (1 = off), applied after the temperature.
    Returns tokens int64 [B], log-prob of each token under the distribution it was drawn from [B],
    and that distribution's entropy [B].
    """
    greedy = tau <= 0
    x = logits / torch.where(greedy, 1.0, tau)[:, None]
    if top_k is not None or top_p is not None:
        x = filter_logits(x, top_k, top_p)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # [B, 1]
    probs = torch.exp(x - lse)
    cdf = torch.cumsum(probs, dim=-1)
    target = (u[:, None] * cdf[:, -1:]).contiguous()
    drawn = torch.searchsorted(cdf, target).squeeze(-1).clamp_max(logits.shape[-1] - 1)
    tokens = torch.where(greedy, logits.argmax(dim=-1), drawn)
    logp = (x.gather(-1, tokens[:, None]) - lse).squeeze(-1)
    weighted = torch.where(probs > 0, probs * x, 0.0)  # 0 * -inf from filtered tokens -> 0
    entropy = lse.squeeze(-1) - weighted.sum(dim=-1)
    return tokens, torch.where(greedy, 0.0, logp), torch.where(greedy, 0.0, entropy)


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


def _unsupported_reason(config) -> str | None:
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(text_config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return f"layer types {sorted(set(layer_types))} (only full attention is supported)"
    if getattr(text_config, "final_logit_softcapping", None):
        return "final logit soft-capping"
    if getattr(text_config, "logit_scale", None) not in (None, 1, 1.0):
        return "a logit scale"
    return None


class Engine:
    """Decoding for a Hugging Face causal LM plus (optionally) its temperature head.

    ``fast_cpu_kernels`` packs the linear layers for oneDNN while decoding on CPU in float32
    (see kernels); results agree with the plain kernels to float rounding.
    """

    def __init__(self, model: nn.Module, head: TemperatureHead | None = None, *, fast_cpu_kernels: bool = True):
        reason = _unsupported_reason(model.config)
        if reason:
            raise NotImplementedError(f"the engine does not support {model.config.model_type} models with {reason}")
        self.model = model
        self.decoder = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.head = head
        self.fast_cpu_kernels = fast_cpu_kernels
        self.num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.vocab_size = self.lm_head.weight.shape[0]
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.eos_token_ids = _eos_ids(model)
        self._policies: dict[str, TemperaturePolicy] = {}

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def policy(self, spec: str) -> TemperaturePolicy:
        """The policy object for ``spec`` (built once, then shared by every request that names it)."""
        if spec not in self._policies:
            self._policies[spec] = build_policy(spec, self.head)
        return self._policies[spec]

    def new_batch(self) -> "DecodeBatch":
        return DecodeBatch(self)

    def generate(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams | Seq[SamplingParams] = SamplingParams(),
        n: int = 1,
        on_step: Callable[[list[Sequence]], None] | None = None,
    ) -> list[list[Sequence]]:
        """Decode every prompt n times. Returns, per prompt, its n finished sequences.

        ``params`` is one SamplingParams for all prompts or one per prompt. Prompts are prefilled
        once each and their KV cache shared by the n samples. ``on_step`` sees the sequences that
        got a token at each step (progress bars, streaming).
        """
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        batch = self.new_batch()
        groups: dict[SamplingParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p, []).append(i)
        out: list[list[Sequence]] = [[] for _ in prompts]
        for p, idx in groups.items():
            added = batch.add([prompts[i] for i in idx], p, n=n, request_ids=idx, first_streams=[i * n for i in idx])
            for i, seqs in zip(idx, added):
                out[i] = seqs
        while batch.num_running:
            stepped = batch.step()
            if on_step is not None:
                on_step(stepped)
        return out


def _eos_ids(model: nn.Module) -> frozenset[int]:
    ids: set[int] = set()
    for cfg in (getattr(model, "generation_config", None), model.config):
        value = getattr(cfg, "eos_token_id", None)
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return frozenset(int(i) for i in ids)


class DecodeBatch:
    """The running batch: one row per unfinished sequence, all advanced together by ``step``.

    Row state lives in tensors (seed, stream, step, previous tau, position, filters, the policy's
    index) beside the KV cache and a left-padded attention mask [B, L]. Finished rows are dropped
    at the end of the step that finished them, so they cost no further forward passes.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.rows: list[Sequence] = []
        self._policies: list[TemperaturePolicy] = []
        self._stops: list[frozenset[int]] = []
        self.cache: BatchKVCache | None = None
        self.mask: Tensor | None = None  # int64 [B, L]: 1 real token, 0 left padding
        self.h: Tensor | None = None  # [B, d] final hidden state of each row's last token
        self.state: dict[str, Tensor] = {}

    @property
    def num_running(self) -> int:
        return len(self.rows)

    def _forward(self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache: BatchKVCache) -> Tensor:
        model = self.engine.model
        was_training = model.training
        if was_training:  # decoding never uses dropout; the trainer's model may be in train mode
            model.eval()
        try:
            with packed_linears(model, self.engine.fast_cpu_kernels):
                out = self.engine.decoder(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
                )
        finally:
            if was_training:
                model.train()
        return out.last_hidden_state[:, -1]

    @torch.inference_mode()
    def add(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams,
        n: int = 1,
        request_ids: Seq[Hashable] | None = None,
        first_streams: Seq[int] | None = None,
    ) -> list[list[Sequence]]:
        """Prefill ``prompts`` once each, expand each to n samples and join the running batch.

        Sample j of prompt i draws its random numbers from stream ``first_streams[i] + j`` of the
        seed (default: i * n + j, so no two samples of one call share numbers).

        Returns, per prompt, its n Sequence objects (filled in by later steps). Raises ValueError,
        before touching the batch, for an empty prompt, a token id outside the vocabulary, or a
        prompt that leaves no room in the model's context.
        """
        engine = self.engine
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty")
            if min(prompt) < 0 or max(prompt) >= engine.vocab_size:
                raise ValueError(f"prompt {i} has a token id outside the vocabulary [0, {engine.vocab_size})")
            if len(prompt) >= engine.max_context:
                raise ValueError(f"prompt {i} has {len(prompt)} tokens; the model's context is {engine.max_context}")
        policy = engine.policy(params.policy)
        request_ids = list(range(len(prompts))) if request_ids is None else list(request_ids)
        first_streams = [i * n for i in range(len(prompts))] if first_streams is None else list(first_streams)
        device = engine.device

        # Prefill, left-padded to the longest prompt.
        length = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), length, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, length - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
            mask[i, length - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = BatchKVCache(engine.num_layers)
        h = self._forward(ids, mask, positions, cache)

        # One row per sample.
        cache.repeat(n)
        mask, h = mask.repeat_interleave(n, 0), h.repeat_interleave(n, 0)
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        seqs = [
            [Sequence(rid, j, list(map(int, p)), seed, policy.spec) for j in range(n)]
            for rid, p in zip(request_ids, prompts)
        ]
        flat = [s for group in seqs for s in group]
        rows = len(flat)
        new_state = {
            "seed": torch.full((rows,), seed - (1 << 64) if seed >= 1 << 63 else seed, dtype=torch.long, device=device),
            "stream": (torch.as_tensor(first_streams, device=device)[:, None] + torch.arange(n, device=device)).flatten(),
            "step": torch.zeros(rows, dtype=torch.long, device=device),
            "tau_prev": torch.full((rows,), policy.initial_tau, dtype=torch.float32, device=device),
            "position": mask.sum(-1),
            "max_new": torch.full((rows,), params.max_new_tokens, dtype=torch.long, device=device),
            "top_k": torch.full((rows,), params.top_k, dtype=torch.long, device=device),
            "top_p": torch.full((rows,), params.top_p, dtype=torch.float32, device=device),
            "policy": torch.full((rows,), self._policy_index(policy), dtype=torch.long, device=device),
        }
        stops = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else engine.eos_token_ids)
        self._join(flat, new_state, [stops] * rows, cache, mask, h)
        return seqs

    def _policy_index(self, policy: TemperaturePolicy) -> int:
        for i, known in enumerate(self._policies):
            if known is policy:
                return i
        self._policies.append(policy)
        return len(self._policies) - 1

    def _join(self, rows, state, stops, cache, mask, h) -> None:
        if not self.rows:
            self.rows, self.state, self._stops, self.cache, self.mask, self.h = rows, state, stops, cache, mask, h
            return
        length = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([F.pad(m, (length - m.shape[1], 0)) for m in (self.mask, mask)])
        self.cache.append(cache)
        self.h = torch.cat([self.h, h])
        self.state = {k: torch.cat([v, state[k]]) for k, v in self.state.items()}
        self.rows += rows
        self._stops += stops

    def cancel(self, sequences: Seq[Sequence]) -> None:
        """Remove sequences from the batch before the next step (e.g. the client went away)."""
        drop = {id(s) for s in sequences}
        for s in self.rows:
            if id(s) in drop:
                s.finish_reason = "cancelled"
        self._keep([i for i, s in enumerate(self.rows) if id(s) not in drop])

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.__init__(self.engine)
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask[idx]
        drop_left = int(mask.shape[1] - mask.sum(-1).max())  # padding columns every kept row has
        self.mask = mask[:, drop_left:]
        self.cache.select(idx, drop_left)
        self.h = self.h[idx]
        self.state = {k: v[idx] for k, v in self.state.items()}
        self.rows = [self.rows[i] for i in keep]
        self._stops = [self._stops[i] for i in keep]

    @torch.inference_mode()
    def step(self) -> list[Sequence]:
        """Sample one token for every running sequence, then run the forward pass that prepares the
        next step for those that continue. Returns the sequences that got a token (finished ones
        included, with ``finish_reason`` set)."""
        if not self.rows:
            return []
        engine, s = self.engine, self.state
        with packed_linears(engine.model, engine.fast_cpu_kernels):
            logits = engine.lm_head(self.h).float()  # [B, V]
        u = uniforms(s["seed"], s["step"], s["stream"])  # [B, NUM_UNIFORMS]
        tau, updated, z, temp_logp = self._act(u)
        filtering = bool((s["top_k"] > 0).any() or (s["top_p"] < 1).any())
        tokens, logp, entropy = sample_tokens(
            logits, tau, u[:, SLOT_TOKEN], s["top_k"] if filtering else None, s["top_p"] if filtering else None
        )

        # Record, and find the rows that are done.
        columns = zip(*(t.tolist() for t in (tokens, tau, updated, z, temp_logp, logp, entropy)))
        at_limit = ((s["step"] + 1 >= s["max_new"]) | (s["position"] + 1 >= engine.max_context)).tolist()
        keep = []
        for i, (seq, (tok, t, c, zz, tl, lp, ent)) in enumerate(zip(self.rows, columns)):
            seq.token_ids.append(tok)
            tr = seq.trace
            tr.tau.append(t), tr.updated.append(c), tr.z.append(zz)
            tr.temp_logp.append(tl), tr.logp.append(lp), tr.entropy.append(ent)
            if tok in self._stops[i]:
                seq.finish_reason = "stop"
            elif at_limit[i]:
                seq.finish_reason = "length"
            else:
                keep.append(i)
        stepped = self.rows
        s["tau_prev"], s["step"] = tau, s["step"] + 1
        self._keep(keep)
        if keep:
            next_ids = tokens[torch.tensor(keep, device=tokens.device)] if len(keep) < len(stepped) else tokens
            self._advance(next_ids)
        return stepped

    def _act(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run each policy on its rows; returns tau, updated, z, temp_logp, each [B]."""
        s = self.state
        if len(self._policies) == 1 or bool((s["policy"] == s["policy"][0]).all()):
            a = self._policies[int(s["policy"][0])].act(self.h, s["step"], s["tau_prev"], u)
            return a.tau.float(), a.updated, a.z.float(), a.logp.float()
        rows = len(self.rows)
        tau = torch.zeros(rows, device=u.device)
        z, temp_logp = torch.zeros_like(tau), torch.zeros_like(tau)
        updated = torch.zeros(rows, dtype=torch.bool, device=u.device)
        for index in s["policy"].unique().tolist():
            idx = (s["policy"] == index).nonzero().squeeze(-1)
            a = self._policies[index].act(self.h[idx], s["step"][idx], s["tau_prev"][idx], u[idx])
            tau[idx], updated[idx], z[idx], temp_logp[idx] = a.tau.float(), a.updated, a.z.float(), a.logp.float()
        return tau, updated, z, temp_logp

    def _advance(self, tokens: Tensor) -> None:
        s = self.state
        self.mask = F.pad(self.mask, (0, 1), value=1)
        self.h = self._forward(tokens[:, None], self.mask, s["position"][:, None], self.cache)
        s["position"] = s["position"] + 1
