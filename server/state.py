"""The server's state: the loaded model, its tokenizer and the decode loop, loaded in a thread.

``load`` never raises: a failure is kept in ``load_error`` (reported by /health and every request)
and in ``load_failure``, one line that names the cause and the command-line flag that fixes it;
``on_load_failure`` (set by ``serve``) then stops the process, which exits non-zero with that line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from introllm.sampler import Engine

from .config import ServerConfig
from .metrics import Metrics
from .scheduler import Scheduler

log = logging.getLogger("introllm.server")


class ServerState:
    """The loaded model and the decode loop; ``ready`` once both exist."""

    def __init__(self, config: ServerConfig, metrics: Metrics, checkpoint=None, loader=None):
        self.config = config
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.loader = loader
        self.ready = False
        self.load_error: str | None = None
        self.load_failure: str | None = None
        self.on_load_failure: Callable[[], None] | None = None
        self.engine = None
        self.scheduler: Scheduler | None = None
        self.tokenizer = None
        self.model_name = config.model_name or "introllm"
        self.created = int(time.time())

    def load(self) -> None:
        try:
            if self.config.backend == "vllm":
                self.engine, tokenizer, path = _load_vllm(self.config)
            elif self.config.backend == "llamacpp":
                self.engine, tokenizer, path = _load_llamacpp(self.config)
            else:
                ck = self.checkpoint or (self.loader() if self.loader else None)
                if ck is None:
                    from introllm.sampler.models import load_model

                    ck = load_model(
                        self.config.checkpoint,
                        self.config.device,
                        self.config.dtype,
                        self.config.trust_remote_code,
                        head=self.config.head,
                    )
                compile = None
                if self.config.compile:
                    from introllm.sampler.compiled import CompileConfig

                    compile = CompileConfig(max_len=self.config.max_model_len, max_slots=self.config.max_batch)
                self.engine, tokenizer, path = Engine(ck.model, ck.head, compile=compile), ck.tokenizer, ck.path
            if tokenizer is None:
                raise ValueError(f"{path} has no tokenizer files; the server needs them")
            self.model_name = self.config.model_name or path.name
            self.tokenizer = tokenizer
            self.scheduler = Scheduler(
                self.engine,
                tokenizer,
                max_batch=self.config.max_batch,
                max_queue=self.config.max_queue,
                metrics=self.metrics,
            )
            self.scheduler.start()
            self.ready = True
            log.info(
                "serving %s on the %s backend (%s)",
                self.model_name,
                self.config.backend,
                "learned temperature head" if self.engine.head is not None else "no head: fixed temperatures only",
            )
        except Exception as e:  # reported by /health, by every request and (serve) by the exit line
            self.load_error = f"{type(e).__name__}: {e}"
            self.load_failure = load_failure_message(e, self.config)
            log.debug("could not load the model", exc_info=True)
            if os.environ.get("INTROLLM_DEBUG"):
                log.exception("could not load the model")
            if self.on_load_failure is not None:
                self.on_load_failure()
            else:
                log.error("%s", self.load_failure)

    def shutdown(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()


# Causes of a failed load that a flag fixes: (words in the error, backend or None for any, advice).
_REMEDIES: tuple[tuple[tuple[str, ...], str | None, str], ...] = (
    (
        ("memory", "engine core initialization failed", "kv cache", "no available memory"),
        "vllm",
        "size vLLM's KV cache with --kv-cache-gib GIB (e.g. --kv-cache-gib 2), or free memory",
    ),
    (("out of memory", "cannot allocate"), "torch", "try --dtype bfloat16 (half the memory) or --device cpu"),
    (("trust_remote_code", "trust remote code"), None, "pass --trust-remote-code if you trust this checkpoint's code"),
    (
        ("not a checkpoint", "no such", "filenotfounderror", "does not exist", "not found", "no tokenizer files"),
        None,
        "point --checkpoint at a checkpoint directory (omit it for the embedded model)",
    ),
    (("does not support",), "torch", "try --backend vllm"),
)


def load_failure_message(error: BaseException, config: ServerConfig) -> str:
    """One line: what failed, why (the error's first line) and the flag that fixes it.

    >>> load_failure_message(ValueError("Available memory on node 0 is less than desired"), ServerConfig(backend="vllm"))[:60]
    'the model could not be loaded (ValueError: Available memory '
    """
    first = (str(error).strip().splitlines() or [""])[0]
    if len(first) > 300:
        first = first[:297] + "..."
    cause = f"{type(error).__name__}: {first}" if first else type(error).__name__
    text = f"{type(error).__name__} {error}".lower()
    advice = next(
        (
            a
            for words, backend, a in _REMEDIES
            if (backend is None or backend == config.backend) and any(w in text for w in words)
        ),
        "run with INTROLLM_DEBUG=1 for the traceback",
    )
    return f"the model could not be loaded ({cause}): {advice}"


def _load_vllm(config: ServerConfig):
    """The vLLM engine (with the head ``--head`` names, as on torch) and the tokenizer for ``config``
    (the embedded model when no checkpoint)."""
    from transformers import AutoTokenizer

    from introllm.sampler.models import default_checkpoint
    from introllm.sampler.vllm_engine import load_vllm

    path = Path(config.checkpoint) if config.checkpoint else default_checkpoint()
    log.info(
        "loading %s into vLLM%s", path, " (eager)" if config.vllm_eager else " (compiling the model: minutes on a CPU)"
    )
    engine = load_vllm(
        config.checkpoint,
        config.head,
        dtype=config.dtype,
        max_batch=config.max_batch,
        eager=config.vllm_eager,
        kv_cache_gib=config.kv_cache_gib,
        trust_remote_code=config.trust_remote_code,
        engine_args=config.vllm_args,
    )
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    return engine, tokenizer, path


def _load_llamacpp(config: ServerConfig):
    """The llama.cpp engine (``sampler.llamacpp_engine.load_llamacpp``: the embedded model's GGUF as
    shipped, or ``--checkpoint FILE.gguf`` with ``--head``), its tokenizer and its path."""
    from introllm.sampler.backends import require_llamacpp
    from introllm.sampler.llamacpp_engine import load_llamacpp

    require_llamacpp("--backend llamacpp")
    engine, tokenizer, path = load_llamacpp(
        config.checkpoint,
        config.head,
        max_batch=config.max_batch,
        context=config.max_model_len,
        threads=config.threads,
    )
    # the model id: the embedded model's name on every backend; a GGUF file's name without .gguf
    from introllm.sampler.models import default_checkpoint

    return engine, tokenizer, default_checkpoint() if config.checkpoint is None else path.with_suffix("")
