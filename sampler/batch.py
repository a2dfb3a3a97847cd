"""The running batch of the torch engine: sequences join (``add``) and leave (``cancel``) between
steps, and ``step`` draws one token for each (DESIGN.md, data flow):

    forward -> final hidden state h_t -> policy -> tau_t (and c_t, z_t) -> logits / tau_t -> sample y_t

``DecodeBatch`` keeps a left-padded ``BatchKVCache`` that grows with the batch; ``compiled.
CompiledBatch`` keeps a static cache of slots for a compiled step. Both take the engine
(``engine.Engine``) they decode for.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence as Seq

import torch
import torch.nn.functional as F
from torch import Tensor

from .cache import BatchKVCache
from .kernels import packed_linears
from .policies import TemperaturePolicy, act_mixed
from .records import PromptRow, Sequence
from .rng import NUM_UNIFORMS, SLOT_TOKEN, UNIFORM_CHUNK, uniforms_ahead
from .sampling import sample_tokens


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


class DecodeBatch:
    """The running batch: one row per unfinished sequence, all advanced together by ``step``.

    Row state lives in tensors (seed, stream, step, previous tau, position, filters, the policy's
    index) beside the KV cache and a left-padded attention mask [B, L]. Finished rows are dropped
    at the end of the step that finished them, so they cost no further forward passes.
    """

    score_actions: bool = True
    """Record each head decision's log-prob in the trace (``Trace.temp_logp``, what the trainer
    compares its own scoring with); a server sets False: the same decisions, the log-prob left 0,
    about 75 us a step less at batch 1 on a 2-vCPU AVX2 EPYC."""

    def __init__(self, engine):
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
        """Prefill the rows' prompts in one forward pass, expand each to its n samples, join the batch
        (see ``_add``). Raises ValueError, before touching the batch, for a bad prompt or policy."""
        return self._add(rows)

    def _add(self, rows: Seq[PromptRow]) -> list[list[Sequence]]:
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

        ns = [r.n for r in rows]
        repeats = torch.tensor(ns, device=device)
        h, position, layout = self._prefill(rows)  # one row per sample
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
            "position": position,
            "max_new": per_row([p.max_new_tokens for p in params]),
            "top_k": per_row([p.top_k for p in params]),
            "top_p": per_row([p.top_p for p in params], torch.float32),
            "logprobs": per_row([p.logprobs for p in params]),
            "policy": per_row([self._policy_index(pol) for pol in policies]),
            # the uniforms of steps rand_from .. rand_from + UNIFORM_CHUNK - 1, drawn at the first step
            "rand": torch.empty(len(flat), UNIFORM_CHUNK, NUM_UNIFORMS, device=device),
            "rand_from": torch.full((len(flat),), -UNIFORM_CHUNK, dtype=torch.long, device=device),
        }
        stops = [frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else engine.eos_token_ids) for p in params]
        self._join(flat, new_state, [stop for stop, k in zip(stops, ns) for _ in range(k)], layout, h)
        return seqs

    def _prefill(self, rows: Seq[PromptRow]) -> tuple[Tensor, Tensor, object]:
        """Read the rows' prompts (one forward pass, left-padded to the longest) and give each of
        their samples a row: (h [N, d] of each sample's last prompt token, its position int64 [N]
        (= tokens in its cache), the layout ``_join`` takes: here (BatchKVCache, mask))."""
        engine = self.engine
        device = engine.device
        length = max(len(r.prompt) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, length - len(r.prompt) :] = torch.as_tensor(r.prompt, dtype=torch.long)
            mask[i, length - len(r.prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = BatchKVCache(engine.num_layers)
        h = self._forward(ids, mask, positions, cache)
        repeats = torch.tensor([r.n for r in rows], device=device)
        cache.repeat(repeats)
        mask, h = mask.repeat_interleave(repeats, 0), h.repeat_interleave(repeats, 0)
        return h, mask.sum(-1), (cache, mask)

    def _policy_index(self, policy: TemperaturePolicy) -> int:
        for i, known in enumerate(self._policies):
            if known is policy:
                return i
        self._policies.append(policy)
        return len(self._policies) - 1

    def _join(self, rows, state, stops, layout, h) -> None:
        cache, mask = layout
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            self.mask = torch.cat([F.pad(m, (length - m.shape[1], 0)) for m in (self.mask, mask)])
            self.cache.append(cache)
        self._append(rows, state, stops, h=h)

    def _append(self, rows, state, stops, **per_row: Tensor) -> None:
        """Append rows with their state, stop sets and per-row tensors (``h=...``; dim 0 = row, kept
        as attributes of those names) to the batch: the bookkeeping every backend's ``_join`` shares."""
        if not self.rows:
            self.rows, self.state, self._stops = rows, state, stops
            for name, value in per_row.items():
                setattr(self, name, value)
            return
        for name, value in per_row.items():
            setattr(self, name, torch.cat([getattr(self, name), value]))
        self.state = {k: torch.cat([v, state[k]]) for k, v in self.state.items()}
        self.rows += rows
        self._stops += stops

    def _select(self, keep: list[int], *per_row: str) -> None:
        """Keep only rows ``keep`` (not empty) of the state, the stop sets and the named per-row
        tensors: the bookkeeping every backend's ``_keep`` shares."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.state["step"].device)
        for name in per_row:
            setattr(self, name, getattr(self, name)[idx])
        self.state = {k: v[idx] for k, v in self.state.items()}
        self.rows = [self.rows[i] for i in keep]
        self._stops = [self._stops[i] for i in keep]

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
        self._select(keep, "h")

    @torch.inference_mode()
    def step(self, on_sampled=None) -> list[Sequence]:
        """Sample one token for every running sequence, then run the forward pass that prepares the
        next step for those that continue. Returns the sequences that got a token (finished ones
        included, with ``finish_reason`` set). ``on_sampled(sequences)``, if given, is called with
        them between the two, so a server can stream the tokens while the forward pass runs; it must
        not add or cancel sequences."""
        return self._step(on_sampled)

    def _step(self, on_sampled=None) -> list[Sequence]:
        if not self.rows:
            return []
        engine, s = self.engine, self.state
        rand = self._uniforms()  # [B, NUM_UNIFORMS]
        num_top = int(s["logprobs"].max())
        tau, updated, z, temp_logp, draw = self._draw(rand, num_top)
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
        if on_sampled is not None:
            on_sampled(stepped)
        if keep:
            next_ids = tokens[torch.tensor(keep, device=tokens.device)] if len(keep) < len(stepped) else tokens
            self._advance(next_ids)
        return stepped

    def _uniforms(self) -> Tensor:
        """This step's uniforms of each row, float32 [B, NUM_UNIFORMS]: ``rng.uniforms`` of its (seed,
        step, stream), read from the chunk of ``UNIFORM_CHUNK`` steps drawn ahead for it."""
        s = self.state
        offset = s["step"] - s["rand_from"]
        stale = offset >= UNIFORM_CHUNK
        if bool(stale.any()):
            idx = stale.nonzero().squeeze(-1)
            s["rand"][idx] = uniforms_ahead(s["seed"][idx], s["step"][idx], s["stream"][idx])
            s["rand_from"] = torch.where(stale, s["step"], s["rand_from"])
            offset = s["step"] - s["rand_from"]
        return s["rand"][torch.arange(offset.shape[0], device=offset.device), offset]

    def _draw(self, rand: Tensor, num_top: int):
        """The policies' decisions and the token draw for every row: (tau, updated, z, temp_logp,
        sampling.Draw), each [B]; the eager path: the engine's logits, each policy on its rows, then
        inverse-CDF sampling (with top-k / top-p where a row asks)."""
        s = self.state
        logits = self._logits()  # [B, V] float32
        tau, updated, z, temp_logp = self._act(rand)
        filtering = self._filtering()
        draw = sample_tokens(
            logits,
            tau,
            rand[:, SLOT_TOKEN],
            s["top_k"] if filtering else None,
            s["top_p"] if filtering else None,
            num_top=num_top,
        )
        return tau, updated, z, temp_logp, draw

    def _logits(self) -> Tensor:
        """Each row's next-token logits, float32 [B, V]: the engine's output projection of h."""
        return self.engine.logits(self.h)

    def _filtering(self) -> bool:
        s = self.state
        return bool((s["top_k"] > 0).any() or (s["top_p"] < 1).any())

    def _act(self, rand: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run each policy on its rows; returns tau, updated, z, temp_logp, each [B]."""
        s = self.state
        a = act_mixed(self._policies, s["policy"], self.h, s["step"], s["tau_prev"], rand, self.score_actions)
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
