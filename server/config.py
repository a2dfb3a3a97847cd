"""Server settings, one typed object built by ``introllm serve`` (or a test) and read by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerConfig:
    checkpoint: str | None = None
    """Checkpoint directory; None serves the embedded SmolLM2-135M-Instruct with its head."""
    model_name: str | None = None
    """The id clients put in ``model``; default: the checkpoint directory's name."""
    host: str = "127.0.0.1"
    """Interface to listen on. 127.0.0.1 keeps the server local; 0.0.0.0 exposes it."""
    port: int = 8000
    device: str = "auto"
    """auto (GPU if present), cpu or cuda."""
    dtype: str = "auto"
    """auto (bfloat16 on GPU and on CPUs with native bfloat16, else float32), float32, bfloat16."""
    api_key: str | None = None
    """When set, /v1/* requires ``Authorization: Bearer <key>`` (401 otherwise)."""
    max_batch: int = 32
    """Most sequences decoded together; a request with n samples takes n of them."""
    max_queue: int = 64
    """Most requests waiting to join the batch; beyond it the server answers 429."""
    max_tokens: int = 1024
    """Cap on max_tokens / max_completion_tokens of one request."""
    max_n: int | None = None
    """Cap on n, the samples per prompt; default min(16, max_batch)."""
    default_max_tokens: int = 256
    """max_tokens when a chat request gives none (completions follow OpenAI's default of 16)."""
    trust_remote_code: bool = False
    backend: str = "torch"
    """torch: the in-process engine (sampler.Engine). vllm: vLLM with the head in its loop."""
    vllm_eager: bool = False
    """vLLM backend: skip torch.compile / CUDA graphs (starts in seconds, decodes slower)."""
    kv_cache_gib: float | None = None
    """vLLM backend: KV cache memory in GiB (default: vLLM's choice, most of the free memory)."""
    vllm_args: dict[str, Any] = field(default_factory=dict)
    """vLLM backend: further EngineArgs fields, e.g. {"max_model_len": 4096}."""

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "vllm"):
            raise ValueError(f"backend must be torch or vllm, got {self.backend!r}")
        if self.kv_cache_gib is not None and not self.kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.max_n is None:
            self.max_n = min(16, self.max_batch)
        for name in ("max_batch", "max_queue", "max_tokens", "max_n", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_n > self.max_batch:
            raise ValueError(f"max_n ({self.max_n}) cannot exceed max_batch ({self.max_batch})")
