"""Server settings, one typed object built by ``introllm serve`` (or a test) and read by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from introllm.sampler.backends import BACKENDS, choose_backend


@dataclass
class ServerConfig:
    checkpoint: str | None = field(default=None, metadata={"metavar": "DIR"})
    """checkpoint directory (default: the embedded SmolLM2-135M-Instruct with its head)"""
    model_name: str | None = None
    """model id clients use (default: the checkpoint directory's name)"""
    host: str = "127.0.0.1"
    """interface to bind; 0.0.0.0 exposes the server"""
    port: int = field(default=8000, metadata={"type": int})
    """port (0: any free port)"""
    device: str = "auto"
    """auto (GPU if present), cpu or cuda"""
    dtype: str = "auto"
    """auto (bfloat16 on GPU and on CPUs with native bfloat16, AVX512_BF16 or AMX; else float32), float32, bfloat16"""
    trust_remote_code: bool = False
    """allow a checkpoint's own Python code (off by default)"""
    head: str | None = field(default=None, metadata={"metavar": "PATH|init"})
    """temperature head to plug on: a head directory (e.g. a head-only training run's final/), or 'init'
    for the untrained start [the checkpoint's own; for the embedded model the trained default head].
    A head for another hidden size or base model is refused"""
    api_key: str | None = field(default=None, metadata={"env": "INTROLLM_API_KEY"})
    """require this bearer key on /v1/*, /metrics and /openapi.json (401 otherwise); /health and the
    playground page stay open"""
    public_metrics: bool = False
    """with --api-key: serve /metrics without the key (for a Prometheus that cannot send it; the
    request counts by status, 401s included, are then public)"""
    ui: bool = field(default=True, metadata={"flag": "--no-ui"})
    """do not serve the playground page at / (served by default)"""
    max_batch: int = 64
    """most sequences decoded together (a request with n samples takes n of them); requests beyond
    it wait in the queue"""
    max_queue: int = 64
    """most requests waiting for room in the batch: with max_batch sequences decoding and max_queue
    requests waiting, the next request is answered 429 with a Retry-After header"""
    max_tokens: int = 1024
    """cap on max_tokens / max_completion_tokens of one request"""
    max_n: int | None = None
    """cap on n, the samples per prompt [min(16, max batch)]"""
    max_body_mb: float = field(default=4.0, metadata={"metavar": "MB"})
    """largest request body in MB (10**6 bytes); a bigger one is answered 413 before it is read"""
    read_timeout: float = field(default=30.0, metadata={"metavar": "SECONDS"})
    """seconds a client has to send a request's head, and again its body; a slower one is answered
    408 and its connection closed"""
    keep_alive: float = field(default=5.0, metadata={"metavar": "SECONDS"})
    """seconds an idle keep-alive connection stays open"""
    max_connections: int = 512
    """most open connections; a connection beyond it is answered 503 with Retry-After and closed"""
    default_max_tokens: int = field(default=256, metadata={"cli": False})
    """max_tokens when a chat request gives none (completions follow OpenAI's default of 16)."""
    backend: str = field(default="torch", metadata={"choices": BACKENDS})
    """decoding backend [auto: vllm on a CUDA host with vLLM installed; on a host without CUDA llamacpp
    when llama-cpp-python is installed, else torch]. ``introllm serve`` passes auto; a config built
    in code defaults to torch"""
    backend_reason: str = field(default="", metadata={"cli": False})
    """Why ``backend`` is what it is (set when auto is resolved; logged by ``introllm serve``)."""
    threads: int | None = None
    """llamacpp: llama.cpp's CPU threads [all cores]"""
    max_model_len: int = 2048
    """llamacpp and --compile: positions per sequence, prompt and completion (both reserve max batch x
    this many KV cells at start)"""
    compile: bool = False
    """torch: decode through the compiled static-shape step (torch.compile; CUDA graphs on a GPU), each
    batch size compiled at its first use (logged); pays on a GPU, not on a CPU (docs/benchmarks.md)"""
    vllm_eager: bool = False
    """vllm: skip torch.compile and CUDA graphs (starts in seconds, decodes slower)"""
    kv_cache_gib: float | None = field(default=None, metadata={"metavar": "GIB"})
    """vllm: KV cache memory [CPU: min(4, half the available memory); GPU: vLLM's default]"""
    vllm_args: dict[str, Any] = field(
        default_factory=dict, metadata={"flag": "--vllm-arg", "action": "append", "metavar": "NAME=VALUE"}
    )
    """vllm: any other EngineArgs field, e.g. max_model_len=4096 (repeatable)"""

    def __post_init__(self) -> None:
        if self.backend == "auto" or not self.backend_reason:
            self.backend, self.backend_reason = choose_backend(self.backend, llamacpp=True)
        if self.kv_cache_gib is not None and not self.kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.max_n is None:
            self.max_n = min(16, self.max_batch)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.max_model_len < 16:
            raise ValueError(f"max_model_len must be >= 16, got {self.max_model_len}")
        for name in ("max_body_mb", "read_timeout", "keep_alive"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_batch", "max_queue", "max_tokens", "max_n", "default_max_tokens", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_n > self.max_batch:
            raise ValueError(f"max_n ({self.max_n}) cannot exceed max_batch ({self.max_batch})")
