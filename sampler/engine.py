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

import logging
import secrets
from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fastpath
from .cache import BatchKVCache
from .head import TemperatureHead
from .kernels import Projection, packed_linears
from .policies import PolicyCache, TemperaturePolicy, act_mixed
from .records import PromptRow, SamplingParams, Sequence, prompt_rows
from .rng import SLOT_TOKEN, uniforms
from .sampling import sample_tokens

log = logging.getLogger(__name__)


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

    ``fused_decode`` runs decode steps of Llama-family models through ``fastpath.FusedDecoder``
    (fused projections, one RoPE and mask per step); other models, and prefill, use the model's
    own forward. ``fast_cpu_kernels`` packs linear weights for oneDNN when decoding on CPU in
    float32, or in bfloat16 on CPUs with native bfloat16 (see kernels). Both agree with the plain forward to float rounding; turn them off to
    decode through the untouched Hugging Face forward.
    """

    def __init__(
        self,
        model: nn.Module,
        head: TemperatureHead | None = None,
        *,
        fused_decode: bool = True,
        fast_cpu_kernels: bool = True,
    ):
        reason = _unsupported_reason(model.config)
        if reason:
            raise NotImplementedError(f"the engine does not support {model.config.model_type} models with {reason}")
        self.model = model
        self.decoder = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.head = head
        self.fast_cpu_kernels = fast_cpu_kernels
        self.fused_decode = fused_decode
        self.fused = None
        if fused_decode:
            why_not = fastpath.unsupported_reason(model)
            if why_not is None:
                self.fused = fastpath.FusedDecoder(model)
            else:
                log.info("decoding through the model's own forward: %s", why_not)
        self.num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.vocab_size = self.lm_head.weight.shape[0]
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.eos_token_ids = _eos_ids(model)
        self._policies = PolicyCache()
        self._output: Projection | None = None
        self._output_packed = fast_cpu_kernels

    def logits(self, h: Tensor) -> Tensor:
        """Output projection of final hidden states h [B, d] -> float32 [B, V]."""
        if not isinstance(self.lm_head, nn.Linear):
            return self.lm_head(h).float()
        if self._output is None or self._output.stale() or self._output_packed != self.fast_cpu_kernels:
            self._output = Projection([self.lm_head], packed=self.fast_cpu_kernels)
            self._output_packed = self.fast_cpu_kernels
        return self._output(h).float()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def policy(self, spec: str) -> TemperaturePolicy:
        """The policy object for ``spec``, shared by the requests that name it."""
        return self._policies.get(spec, self.head)

    def new_batch(self) -> DecodeBatch:
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
        return run_to_completion(self.new_batch(), prompts, params, n, on_step)


def run_to_completion(batch, prompts, params, n, on_step=None) -> list[list[Sequence]]:
    """Decode every prompt n times in ``batch`` (a DecodeBatch or a VLLMBatch) until all finish."""
    out = batch.add(prompt_rows(prompts, params, n))
    while batch.num_running:
        stepped = batch.step()
        if on_step is not None:
            on_step(stepped)
    return out


def check_rows(rows: Seq[PromptRow], vocab_size: int, max_context: int) -> None:
    """Raises ValueError for a batch that cannot be decoded: an empty prompt, a token id outside
    the vocabulary, a prompt that leaves no room in the model's context, or n < 1."""
    for i, row in enumerate(rows):
        if row.n < 1:
            raise ValueError(f"n must be >= 1, got {row.n}")
        if len(row.prompt) == 0:
            raise ValueError(f"prompt {i} is empty")
        if min(row.prompt) < 0 or max(row.prompt) >= vocab_size:
            raise ValueError(f"prompt {i} has a token id outside the vocabulary [0, {vocab_size})")
        if len(row.prompt) >= max_context:
            raise ValueError(f"prompt {i} has {len(row.prompt)} tokens; the model's context is {max_context}")


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
        """The model's own forward (prefill, and decode for models without the fused path)."""
        engine = self.engine
        model = engine.model
        was_training = model.training
        if was_training:  # decoding never uses dropout; the trainer's model may be in train mode
            model.eval()
        try:
            # With the fused path, decode steps never come here: no packed copies for prefill.
            with packed_linears(model, engine.fast_cpu_kernels and not self._use_fused):
                out = engine.decoder(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
        finally:
            if was_training:
                model.train()
        return out.last_hidden_state[:, -1]

    @property
    def _use_fused(self) -> bool:
        return self.engine.fused is not None and self.engine.fused_decode

    @torch.inference_mode()
    def add(self, rows: Seq[PromptRow]) -> list[list[Sequence]]:
        """Prefill the rows' prompts in one forward pass, expand each to its n samples, join the batch.

        Rows may differ in settings (requests share a prefill). Sample j of a row draws its random
        numbers from stream ``row.first_stream + j`` of its seed (``prompt_rows`` numbers them so
        that no two samples of one call share numbers).

        Returns, per row, its Sequence objects (filled in by later steps). Raises ValueError,
        before touching the batch, for an empty prompt, a token id outside the vocabulary, a
        prompt that leaves no room in the model's context, or an unknown policy.
        """
        engine = self.engine
        count = len(rows)
        if not count:
            return []
        check_rows(rows, engine.vocab_size, engine.max_context)
        params = [r.params for r in rows]
        policies = [engine.policy(p.policy) for p in params]
        device = engine.device

        # Prefill, left-padded to the longest prompt.
        length = max(len(r.prompt) for r in rows)
        ids = torch.zeros(count, length, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, length - len(r.prompt) :] = torch.as_tensor(r.prompt, dtype=torch.long)
            mask[i, length - len(r.prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = BatchKVCache(engine.num_layers)
        h = self._forward(ids, mask, positions, cache)

        # One row per sample.
        ns = [r.n for r in rows]
        repeats = torch.tensor(ns, device=device)
        cache.repeat(repeats)
        mask, h = mask.repeat_interleave(repeats, 0), h.repeat_interleave(repeats, 0)
        seeds = [p.seed if p.seed is not None else secrets.randbits(63) for p in params]
        seqs = [
            [Sequence(r.request_id, j, list(r.prompt), seed, policy.spec) for j in range(r.n)]
            for r, seed, policy in zip(rows, seeds, policies)
        ]
        flat = [s for group in seqs for s in group]

        def per_row(values, dtype=torch.long) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(repeats)

        new_state = {
            "seed": per_row([sd - (1 << 64) if sd >= 1 << 63 else sd for sd in seeds]),
            "stream": per_row([r.first_stream for r in rows]) + torch.cat([torch.arange(k, device=device) for k in ns]),
            "step": torch.zeros(len(flat), dtype=torch.long, device=device),
            "tau_prev": per_row([pol.initial_tau for pol in policies], torch.float32),
            "position": mask.sum(-1),
            "max_new": per_row([p.max_new_tokens for p in params]),
            "top_k": per_row([p.top_k for p in params]),
            "top_p": per_row([p.top_p for p in params], torch.float32),
            "logprobs": per_row([p.logprobs for p in params]),
            "policy": per_row([self._policy_index(pol) for pol in policies]),
        }
        stops = [frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else engine.eos_token_ids) for p in params]
        self._join(flat, new_state, [stop for stop, k in zip(stops, ns) for _ in range(k)], cache, mask, h)
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
        logits = engine.logits(self.h)  # [B, V] float32
        rand = uniforms(s["seed"], s["step"], s["stream"])  # [B, NUM_UNIFORMS]
        tau, updated, z, temp_logp = self._act(rand)
        filtering = bool((s["top_k"] > 0).any() or (s["top_p"] < 1).any())
        num_top = int(s["logprobs"].max())
        draw = sample_tokens(
            logits,
            tau,
            rand[:, SLOT_TOKEN],
            s["top_k"] if filtering else None,
            s["top_p"] if filtering else None,
            num_top=num_top,
        )
        tokens = draw.tokens

        # Record, and find the rows that are done.
        columns = zip(*(t.tolist() for t in (tokens, tau, updated, z, temp_logp, draw.logp, draw.entropy)))
        if num_top:
            tops = [list(zip(i, v)) for i, v in zip(draw.top_ids.tolist(), draw.top_logp.tolist())]
            wanted = s["logprobs"].tolist()
        at_limit = ((s["step"] + 1 >= s["max_new"]) | (s["position"] + 1 >= engine.max_context)).tolist()
        keep = []
        for i, (seq, (tok, t, c, zz, tl, lp, ent)) in enumerate(zip(self.rows, columns)):
            seq.token_ids.append(tok)
            seq.trace.append(t, c, zz, tl, lp, ent, tops[i][: wanted[i]] if num_top and wanted[i] else None)
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

    def _act(self, rand: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run each policy on its rows; returns tau, updated, z, temp_logp, each [B]."""
        s = self.state
        a = act_mixed(self._policies, s["policy"], self.h, s["step"], s["tau_prev"], rand)
        return a.tau, a.updated, a.z, a.logp

    def _advance(self, tokens: Tensor) -> None:
        s = self.state
        self.mask = F.pad(self.mask, (0, 1), value=1)
        if self._use_fused:
            self.h = self.engine.fused(
                tokens[:, None], self.mask, s["position"][:, None], self.cache, packed=self.engine.fast_cpu_kernels
            )
        else:
            self.h = self._forward(tokens[:, None], self.mask, s["position"][:, None], self.cache)
        s["position"] = s["position"] + 1
