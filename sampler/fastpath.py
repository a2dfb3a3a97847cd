"""A lean decode step for Llama-family decoders (llama, mistral, qwen2, qwen3).

Why: at decode batch sizes on CPU the Hugging Face forward spends about a third of a step outside
the matmuls (mask construction, reshapes, separate q/k/v and gate/up projections, dispatch of
small ops), and the matmuls themselves are bound by memory bandwidth. This module runs the same
computation with q/k/v fused into one projection and gate/up into another (one weight stream
each instead of three and two), RoPE applied to q and k heads together, RMSNorm through one fused
kernel, and the attention mask built once per step for all layers (in bfloat16 on a 2-core
AVX512_BF16/AMX Xeon the last two cut a batch-1 step by about a tenth: per-op overhead, not
bandwidth, is most of a small model's step there). It reads the model's own modules for everything family-specific (norms,
activation, rotary embedding, per-head q/k norms of Qwen3), so it computes what the model does;
tests hold its hidden states to the Hugging Face forward's within float rounding.

It only serves single-token decode steps on the engine's ``BatchKVCache``; prefill goes through
the model's own forward. Models outside the family, or with features it does not handle, fall back
to the generic path (``unsupported_reason`` says why).

The fused weights are ``kernels.Projection`` copies (packed for oneDNN on CPU in float32, and in
bfloat16 where the CPU has native bfloat16), rebuilt
when the model's weights change (training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import BatchKVCache
from .kernels import Projection, stamp

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported_reason(model: nn.Module) -> str | None:
    cfg = model.config
    if cfg.model_type not in FAMILIES:
        return f"model type {cfg.model_type!r} is not one of {FAMILIES}"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window layers"
    decoder = model.get_decoder()
    for attr in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(decoder, attr):
            return f"decoder has no {attr}"
    for layer in decoder.layers:
        a, mlp = layer.self_attn, layer.mlp
        if not all(hasattr(a, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")):
            return "attention without separate q/k/v/o projections"
        if not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return "MLP is not gate/up/down"
    return None


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rms_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)`` for a Llama-style RMSNorm in 3 ops instead of 7: normalised in float32 by one
    fused kernel (``F.rms_norm``), rounded to x's dtype, then scaled by the weight, the same
    roundings as the Hugging Face module (a float32 reduction order may differ in the last bit)."""
    weight, eps = getattr(norm, "weight", None), getattr(norm, "variance_epsilon", None)
    if weight is None or eps is None or weight.dim() != 1:
        return norm(x)
    return weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)


class FusedDecoder:
    """``decoder(input_ids [B, 1], mask [B, L+1], positions [B, 1], cache) -> h [B, d]``."""

    def __init__(self, model: nn.Module):
        reason = unsupported_reason(model)
        if reason:
            raise NotImplementedError(reason)
        self.model = model
        self.decoder = model.get_decoder()
        self._layers: list[dict] = []
        self._packed = True

    def _build(self, packed: bool) -> None:
        self._layers = []
        for layer in self.decoder.layers:
            a, mlp = layer.self_attn, layer.mlp
            self._layers.append(
                dict(
                    qkv=Projection([a.q_proj, a.k_proj, a.v_proj], packed),
                    split=(a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features),
                    o=Projection([a.o_proj], packed),
                    gate_up=Projection([mlp.gate_proj, mlp.up_proj], packed),
                    down=Projection([mlp.down_proj], packed),
                )
            )
        self._packed = packed
        self._sources = [
            t for layer in self._layers for p in layer.values() if isinstance(p, Projection) for t in p.sources
        ]
        self._stamp = stamp(self._sources)

    def _stale(self, packed: bool) -> bool:
        return not self._layers or packed != self._packed or stamp(self._sources) != self._stamp

    def __call__(
        self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache: BatchKVCache, packed: bool = True
    ) -> Tensor:
        """``packed``: use oneDNN-packed weights when the model is on CPU in float32."""
        if self._stale(packed):
            self._build(packed)
        dec = self.decoder
        batch = input_ids.shape[0]
        x = dec.embed_tokens(input_ids)  # [B, 1, d]
        cos, sin = dec.rotary_emb(x, positions)  # [B, 1, head_dim] each
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, 1, head_dim]
        attend = mask.bool()[:, None, None, :]  # [B, 1, 1, L+1]
        for layer, fused, kv in zip(dec.layers, self._layers, cache.layers):
            a, mlp = layer.self_attn, layer.mlp
            d = a.head_dim
            heads_q, heads_k = fused["split"][0] // d, fused["split"][1] // d
            qkv = fused["qkv"](_rms_norm(layer.input_layernorm, x)).view(batch, 1, -1, d)  # [B, 1, q+k+v heads, d]
            if hasattr(a, "q_norm"):  # Qwen3: RMSNorm over each head before RoPE
                q, k, v = qkv.split((heads_q, heads_k, heads_k), dim=2)
                qk = torch.cat((a.q_norm(q), a.k_norm(k)), dim=2).transpose(1, 2)
            else:
                qk = qkv[:, :, : heads_q + heads_k].transpose(1, 2)  # [B, q+k heads, 1, d]
                v = qkv[:, :, heads_q + heads_k :]
            qk = qk * cos + _rotate_half(qk) * sin  # RoPE on q and k heads at once
            q, k = qk[:, :heads_q], qk[:, heads_q:]
            keys, values = kv.update(k, v.transpose(1, 2))
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, scale=a.scaling, enable_gqa=True)
            x = x + fused["o"](out.transpose(1, 2).reshape(batch, 1, -1))
            gate, up = fused["gate_up"](_rms_norm(layer.post_attention_layernorm, x)).chunk(2, dim=-1)
            x = x + fused["down"](mlp.act_fn(gate) * up)
        return _rms_norm(dec.norm, x)[:, -1]
