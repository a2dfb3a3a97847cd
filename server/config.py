"""Server settings, one typed object built by ``introllm serve`` (or a test) and read by the app."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("auto", "torch", "vllm")


def choose_backend(requested: str) -> tuple[str, str]:
    """("torch" or "vllm", why) for ``--backend requested``. "auto" picks vLLM when a CUDA device is
    present and vLLM is importable, else the torch engine: on a GPU the torch engine is bound by
    kernel launches (~15 tok/s at batch 1 on an H100, DESIGN.md), on a CPU it is the simpler and
    seed-reproducible choice. Raises ValueError for a name not in BACKENDS."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested != "auto":
        return requested, f"--backend {requested}"
    import torch

    cuda = torch.cuda.is_available()
    vllm = importlib.util.find_spec("vllm") is not None
    if cuda and vllm:
        return "vllm", "--backend auto: a CUDA device is present and vLLM is installed"
    if cuda:
        return "torch", "--backend auto: a CUDA device is present but vLLM is not installed (pip install 'introllm[vllm]')"
    return "torch", "--backend auto: no CUDA device" + (
        " (vLLM is installed; --backend vllm uses it on this CPU)" if vllm else ""
    )


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
    max_batch: int = 64
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
    ui: bool = True
    """Serve the playground page at ``/`` (chat with per-token temperatures); ``--no-ui`` turns it off."""
    head: str | None = None
    """Temperature head: None = the checkpoint's own (the trained default head for the embedded
    model), "init" = the untrained start, or a head directory plugged on (torch backend only)."""
    backend: str = "torch"
    """torch: the in-process engine (sampler.Engine). vllm: vLLM with the head in its loop. auto:
    resolved here by ``choose_backend`` (vllm on a CUDA host with vLLM installed, else torch);
    ``introllm serve`` passes auto by default."""
    backend_reason: str = ""
    """Why ``backend`` is what it is (set when auto is resolved; logged by ``introllm serve``)."""
    vllm_eager: bool = False
    """vLLM backend: skip torch.compile / CUDA graphs (starts in seconds, decodes slower)."""
    kv_cache_gib: float | None = None
    """vLLM backend: KV cache memory in GiB (default on a CPU: min(4, half the available memory),
    see sampler.vllm_engine.kv_cache_bytes; on a GPU: vLLM's own choice)."""
    vllm_args: dict[str, Any] = field(default_factory=dict)
    """vLLM backend: further EngineArgs fields, e.g. {"max_model_len": 4096}."""

    def __post_init__(self) -> None:
        if self.backend == "auto" or not self.backend_reason:
            self.backend, self.backend_reason = choose_backend(self.backend)
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
