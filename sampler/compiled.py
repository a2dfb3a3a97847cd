"""A compiled, static-shape decode step for the torch engine (``Engine(..., compile=CompileConfig())``).

Why: an eager decode step issues some thirty kernels per layer, and on a GPU the host cannot launch
them as fast as the GPU runs them (DESIGN.md: ~63 ms a step at batch 1 on an H100 for a 1.7B
model, where memory bandwidth allows ~1 ms). The field's answer (gpt-fast, vLLM) is one compiled
step over static shapes, replayed as a CUDA graph: ``torch.compile(mode="reduce-overhead")``.

What is static here:

- the KV cache: ``StaticKVCache``, per layer keys and values [slots, kv heads, max_len, head dim];
  a sequence owns one slot from its prefill to its end, its token t at position t;
- the batch: a step runs on slots [0, B) for B the smallest of ``batch_buckets`` that covers every
  running sequence's slot (new sequences take the lowest free slot); idle slots in that range
  compute on a dummy token and write only into their own, unused, slot;
- the context: attention reads positions [0, L) for L the smallest of ``len_buckets`` above every
  running position (a power of two from 256 up to max_len), so a short sequence does not pay for
  max_len.

Each (B, L) pair is compiled once, the first time it is needed, and its compile time logged;
inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default under /tmp) makes later starts fast.

Two functions are compiled: ``forward`` (a token per slot -> the final hidden state h, writing
K/V in place) and ``decide_and_sample`` (h -> logits, the temperature head's output, the learned
policy's decision, and the token drawn by inverse CDF from softmax(logits / tau)), both with the
same math as the eager engine (``sampling.tempered``, ``head``, ``rng.beta_sample``). Policies
other than learned and fixed act eagerly on their rows and hand their tau in; steps that need
top-k / top-p filtering or top log-probs sample eagerly. Prefill runs eagerly through the model's
own forward and is copied into the slots. The random numbers are the engine's counters, drawn
outside the graph, so a sequence's draws are the same compiled or not.

Llama-family models only (those ``fastpath`` serves).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import head as H
from .batch import DecodeBatch
from .policies import LearnedPolicy, act_mixed
from .rng import SLOT_GATE, SLOT_TOKEN, beta_sample
from .sampling import Draw, draw, tempered

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileConfig:
    """How the compiled decode step is laid out (``--compile``)."""

    max_len: int = 2048
    """Positions per slot (prompt + completion); the static KV cache holds max_slots x max_len tokens."""
    max_slots: int = 64
    """Sequences decoded at once (the server's --max-batch)."""
    batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """Batch sizes a step is compiled for (as vLLM captures CUDA graphs for a set of sizes)."""
    mode: str = "auto"
    """torch.compile mode: auto (reduce-overhead, i.e. CUDA graphs, on CUDA; default on CPU), or any
    mode torch.compile takes."""
    len_buckets: tuple[int, ...] = field(default=())
    """Context lengths attention is compiled for (default: powers of two from 256 to max_len)."""

    def __post_init__(self) -> None:
        if self.max_len < 2 or self.max_slots < 1:
            raise ValueError(f"compile needs max_len >= 2 and max_slots >= 1, got {self.max_len}, {self.max_slots}")
        buckets = tuple(sorted({b for b in self.batch_buckets if b < self.max_slots} | {self.max_slots}))
        object.__setattr__(self, "batch_buckets", buckets)
        lens = self.len_buckets or tuple(
            sorted(
                {
                    min(self.max_len, 256 << i)
                    for i in range(max(1, math.ceil(math.log2(max(self.max_len, 256) / 256)) + 1))
                }
            )
        )
        object.__setattr__(self, "len_buckets", tuple(sorted({min(x, self.max_len) for x in lens} | {self.max_len})))

    def batch_bucket(self, rows: int) -> int:
        return next(b for b in self.batch_buckets if b >= rows)

    def len_bucket(self, length: int) -> int:
        return next(b for b in self.len_buckets if b >= length)


class StaticKVCache(nn.Module):
    """Keys and values of every layer in preallocated buffers [slots, kv heads, max_len, head dim]
    (module buffers, so that a CUDA graph sees fixed addresses it may write into)."""

    def __init__(self, num_layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (slots, kv_heads, max_len, head_dim)
        for i in range(num_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.num_layers, self.max_len = num_layers, max_len

    @property
    def k(self) -> list[Tensor]:
        return [getattr(self, f"k{i}") for i in range(self.num_layers)]

    @property
    def v(self) -> list[Tensor]:
        return [getattr(self, f"v{i}") for i in range(self.num_layers)]

    def load(self, slot: int, layer: int, keys: Tensor, values: Tensor) -> None:
        """Copy a prefill's keys/values [kv heads, n, head dim] into positions [0, n) of ``slot``."""
        n = keys.shape[1]
        self.k[layer][slot, :, :n] = keys
        self.v[layer][slot, :, :n] = values

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class StaticDecoder(nn.Module):
    """The decode step of a Llama-family decoder on a StaticKVCache, written for torch.compile:
    fixed shapes, no Python-side branching on values, K/V written in place with ``scatter_``.

    forward(tokens int64 [B], positions int64 [B], length L) -> h [B, d]: slot i's token at
    positions[i]; attention over positions [0, L) of slots [0, B) where position <= positions[i].
    """

    def __init__(self, model: nn.Module, cache: StaticKVCache):
        super().__init__()
        self.decoder = model.get_decoder()
        self.cache = cache

    def forward(self, tokens: Tensor, positions: Tensor, length: int) -> Tensor:
        dec = self.decoder
        batch = tokens.shape[0]
        x = dec.embed_tokens(tokens[:, None])  # [B, 1, d]
        cos, sin = dec.rotary_emb(x, positions[:, None])
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, 1, head_dim]
        attend = (torch.arange(length, device=tokens.device)[None, :] <= positions[:, None])[:, None, None, :]
        for i, layer in enumerate(dec.layers):
            a, mlp = layer.self_attn, layer.mlp
            d = a.head_dim
            hs = layer.input_layernorm(x)
            q = a.q_proj(hs).view(batch, 1, -1, d).transpose(1, 2)  # [B, Hq, 1, d]
            k = a.k_proj(hs).view(batch, 1, -1, d).transpose(1, 2)  # [B, Hk, 1, d]
            v = a.v_proj(hs).view(batch, 1, -1, d).transpose(1, 2)
            if hasattr(a, "q_norm"):  # Qwen3: RMSNorm over each head before RoPE
                q, k = a.q_norm(q), a.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            where = positions.view(batch, 1, 1, 1).expand(batch, k.shape[1], 1, d)
            k_cache, v_cache = getattr(self.cache, f"k{i}")[:batch], getattr(self.cache, f"v{i}")[:batch]
            k_cache.scatter_(2, where, k.to(k_cache.dtype))
            v_cache.scatter_(2, where, v.to(v_cache.dtype))
            out = F.scaled_dot_product_attention(
                q, k_cache[:, :, :length], v_cache[:, :, :length], attn_mask=attend, scale=a.scaling, enable_gqa=True
            )
            x = x + a.o_proj(out.transpose(1, 2).reshape(batch, 1, -1))
            hs = layer.post_attention_layernorm(x)
            x = x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(hs)) * mlp.up_proj(hs))
        return dec.norm(x)[:, 0]


def decide_and_sample(
    logits: Tensor,
    u: Tensor | None,
    rand: Tensor,
    tau_prev: Tensor,
    given_tau: Tensor,
    use_given: Tensor,
    tau_min: float,
    tau_max: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The learned policy's decision (paper §4.2) and the token draw, branch-free for torch.compile.

    logits: float32 [B, V]; u: head outputs float32 [B, 3] (None: no head, every row given);
    rand: [B, NUM_UNIFORMS]; tau_prev: [B]; given_tau: [B] the tau of rows whose policy acted
    eagerly (fixed: its constant; 0 greedy), used where use_given. Returns tau, updated, z,
    temp_logp, token, logp, entropy ([B] each), as ``policies.LearnedPolicy.act`` and
    ``sampling.sample_tokens`` compute them (greedy reported at tau 1)."""
    if u is not None:
        updated = rand[:, SLOT_GATE] < H.update_prob(u)
        alpha, beta = H.concentrations(u)
        z = torch.where(updated, H.clamp_z(beta_sample(alpha, beta, rand)), torch.zeros_like(tau_prev))
        tau_learned = torch.where(updated, H.z_to_tau(z, tau_min, tau_max), tau_prev)
        temp_logp = H.action_log_prob(u, updated, z)
        tau = torch.where(use_given, given_tau, tau_learned)
        updated, z = updated & ~use_given, torch.where(use_given, torch.zeros_like(z), z)
        temp_logp = torch.where(use_given, torch.zeros_like(temp_logp), temp_logp)
    else:
        tau, updated = given_tau, torch.zeros_like(use_given)
        z = temp_logp = torch.zeros_like(given_tau)
    greedy = tau <= 0
    x = tempered(logits, tau)
    sampled, lse, entropy = draw(x, rand[:, SLOT_TOKEN])  # as sample_tokens
    token = torch.where(greedy, logits.argmax(dim=-1), sampled)
    logp = x.gather(-1, token[:, None]).squeeze(-1) - lse
    return tau, updated, z, temp_logp, token, logp, entropy


class CompiledSteps:
    """The compiled functions and the static cache of one engine; compiles each (B, L) on first use."""

    def __init__(self, model: nn.Module, head: nn.Module | None, config: CompileConfig):
        cfg = model.config.get_text_config(decoder=True)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        param = next(model.parameters())
        self.config = config
        self.device = param.device
        self.cache = StaticKVCache(
            cfg.num_hidden_layers,
            config.max_slots,
            cfg.num_key_value_heads,
            config.max_len,
            head_dim,
            param.dtype,
            param.device,
        )
        self.model, self.head = model, head
        self.lm_head = model.get_output_embeddings()
        mode = (
            config.mode if config.mode != "auto" else ("reduce-overhead" if param.device.type == "cuda" else "default")
        )
        import torch._dynamo

        # one graph per (batch, length) bucket pair, plus the sampling graph per batch bucket
        limit = 4 * len(config.batch_buckets) * (len(config.len_buckets) + 1)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
        if hasattr(torch._dynamo.config, "recompile_limit"):
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        self.mode = mode
        self._decoder = StaticDecoder(model, self.cache)
        self._forward = torch.compile(self._decoder, mode=mode, fullgraph=True, dynamic=False)
        self._sample = torch.compile(self._sample_eager, mode=mode, fullgraph=True, dynamic=False)
        self._seen: set[tuple] = set()
        self.compile_seconds = 0.0
        log.info(
            "compiled decode step (%s): %d slots x %d positions, KV cache %.2f GiB, batch buckets %s, "
            "context buckets %s",
            mode,
            config.max_slots,
            config.max_len,
            self.cache.bytes / (1 << 30),
            list(config.batch_buckets),
            list(config.len_buckets),
        )

    def _sample_eager(self, h, rand, tau_prev, given_tau, use_given):
        logits = self.lm_head(h).float()
        u = self.head(h) if self.head is not None else None
        bounds = (self.head.config.tau_min, self.head.config.tau_max) if self.head is not None else (0.0, 1.0)
        return decide_and_sample(logits, u, rand, tau_prev, given_tau, use_given, *bounds)

    def _timed(self, key: tuple, fn, *args):
        if key in self._seen:
            return fn(*args)
        start = time.perf_counter()
        out = fn(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        self.compile_seconds += seconds
        self._seen.add(key)
        log.info("compiled %s in %.1f s", key, seconds)
        return out

    def forward(self, tokens: Tensor, positions: Tensor, length: int) -> Tensor:
        """tokens / positions [B] for slots [0, B) (B a batch bucket) -> h [B, d]."""
        return self._timed(("forward", tokens.shape[0], length), self._forward, tokens, positions, length)

    def sample(self, h, rand, tau_prev, given_tau, use_given):
        return self._timed(("sample", h.shape[0]), self._sample, h, rand, tau_prev, given_tau, use_given)


class CompiledBatch(DecodeBatch):
    """``batch.DecodeBatch`` on the static cache with the compiled step: the same rows, state,
    policies and random numbers, so the same tokens as the eager batch up to float rounding
    (tested). Each row owns a slot (``state["slot"]``); a finished row frees it at once."""

    def __init__(self, engine):
        super().__init__(engine)
        self.steps: CompiledSteps = engine.compiled
        self._free = list(range(self.steps.config.max_slots))

    @torch.no_grad()
    def add(self, rows):
        return self._add(rows)

    @torch.no_grad()
    def step(self, on_sampled=None):
        return self._step(on_sampled)

    def _join(self, rows, state, stops, layout, h) -> None:
        cache, mask = layout
        if len(rows) > len(self._free):
            raise ValueError(
                f"{len(rows)} new sequences do not fit: {len(self._free)} of "
                f"{self.steps.config.max_slots} compiled slots are free"
            )
        lengths = mask.sum(-1).tolist()
        if max(lengths) >= self.steps.config.max_len:
            raise ValueError(
                f"a prompt of {max(lengths)} tokens leaves no room in the compiled context of "
                f"{self.steps.config.max_len} positions (--compile-max-len)"
            )
        self._free.sort()
        slots = [self._free.pop(0) for _ in rows]
        width = mask.shape[1]
        for layer, kv in enumerate(cache.layers):
            for row, (slot, n) in enumerate(zip(slots, lengths)):
                self.steps.cache.load(
                    slot, layer, kv.keys[row, :, width - n : width], kv.values[row, :, width - n : width]
                )
        state = {**state, "slot": torch.tensor(slots, dtype=torch.long, device=h.device)}
        self._append(rows, state, stops, h=h)

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        kept = set(keep)
        self._free += [int(self.state["slot"][i]) for i in range(len(self.rows)) if i not in kept]
        if not keep:
            self.rows, self.state, self._stops, self.h = [], {}, [], None
            return
        self._select(keep, "h")

    def _bucket(self) -> tuple[Tensor, int]:
        slots = self.state["slot"]
        return slots, self.steps.config.batch_bucket(int(slots.max()) + 1)

    def _draw(self, rand: Tensor, num_top: int):
        if num_top or self._filtering():  # filtering and top log-probs: the eager path
            return super()._draw(rand, num_top)
        s = self.state
        learned = torch.tensor(
            [type(p) is LearnedPolicy and p.head is self.steps.head for p in self._policies],
            dtype=torch.bool,
            device=self.h.device,
        )[s["policy"]]
        tau_g, upd_g, z_g, logp_g = (
            torch.zeros_like(s["tau_prev"]),
            torch.zeros_like(learned),
            torch.zeros_like(s["tau_prev"]),
            torch.zeros_like(s["tau_prev"]),
        )
        if not bool(learned.all()):  # the other policies act eagerly on their rows and hand their tau in
            others = (~learned).nonzero().squeeze(-1)
            a = act_mixed(
                self._policies,
                s["policy"][others],
                self.h[others],
                s["step"][others],
                s["tau_prev"][others],
                rand[others],
                self.score_actions,
            )
            tau_g[others], upd_g[others], z_g[others], logp_g[others] = a.tau, a.updated, a.z, a.logp
        slots, bucket = self._bucket()

        def spread(x: Tensor, fill=0) -> Tensor:
            out = torch.full((bucket, *x.shape[1:]), fill, dtype=x.dtype, device=x.device)
            out[slots] = x
            return out

        out = self.steps.sample(
            spread(self.h), spread(rand, 0.5), spread(s["tau_prev"], 1.0), spread(tau_g, 1.0), spread(~learned, True)
        )
        tau, updated, z, temp_logp, token, logp, entropy = (t[slots] for t in out)
        updated = torch.where(learned, updated, upd_g)
        z = torch.where(learned, z, z_g)
        temp_logp = torch.where(learned, temp_logp, logp_g)
        return tau, updated, z, temp_logp, Draw(token, logp, entropy, None, None)

    def _advance(self, tokens: Tensor) -> None:
        s = self.state
        slots, bucket = self._bucket()
        length = self.steps.config.len_bucket(int(s["position"].max()) + 1)
        tok = torch.zeros(bucket, dtype=torch.long, device=tokens.device)
        pos = torch.zeros(bucket, dtype=torch.long, device=tokens.device)
        tok[slots], pos[slots] = tokens, s["position"]
        self.h = self.steps.forward(tok, pos, length)[slots]  # indexing copies out of the graph's buffer
        s["position"] = s["position"] + 1
