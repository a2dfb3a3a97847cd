"""introllm train --report-to: TensorBoard event files and W&B offline runs hold every step's
figures of metrics.jsonl (read back with tensorboard's own reader and W&B's run files), the config
as hyperparameters, and a missing tracker package is a one-line error."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from introllm.training.tracking import flat_config, flat_metrics

REWARD = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"


def test_flat_metrics_keeps_numbers_and_names_eval_figures():
    row = {
        "step": 2,
        "reward": 0.5,
        "policy": "learned",
        "eval_accuracy": 0.25,
        "tampo_probs": [0.5, 0.5],
        "tau_mean_by_level": {"1": 0.8},
        "skipped": False,
        "nan": float("nan"),
    }
    assert flat_metrics(row) == {
        "reward": 0.5,
        "eval/accuracy": 0.25,
        "tampo_probs/0": 0.5,
        "tampo_probs/1": 0.5,
        "tau_mean_by_level/1": 0.8,
        "skipped": 0.0,
    }
    assert flat_config({"data": {"rg_args": {"a": 1}, "eval_size": 4}}) == {
        "data.rg_args": '{"a": 1}',
        "data.eval_size": 4,
    }


def _train(tiny_ckpt, tmp_path, report_to, env=None):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(12))
    )
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "introllm",
        "train",
        "--model",
        str(tiny_ckpt),
        "--dataset",
        str(data),
        "--reward",
        REWARD,
        "--output",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--eval-size",
        "2",
        "--eval-samples",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--report-to",
        report_to,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    return proc, out


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_metrics_of_every_step(tiny_ckpt, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc, out = _train(tiny_ckpt, tmp_path, "tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = {}
    for path in {e.parent for e in events}:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = {e.step: e.value for e in acc.Scalars(tag)}
    for row in rows:
        for key, value in flat_metrics(row).items():
            assert scalars[key][row["step"]] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, row["step"])
    assert scalars["eval/accuracy"].keys() == {0, 2} and set(scalars["reward"]) == {1, 2}


def _wandb_records(raw: bytes):
    """The records of a ``.wandb`` file (wandb 0.31 ships no reader): a 7-byte header (":W&B",
    magic 0xBEE1, version 0), then LevelDB's log format: 32 KiB blocks of records, each a 7-byte
    header (CRC-32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block
    tail shorter than a header is padding."""
    import struct

    assert raw[:4] == b":W&B" and struct.unpack("<HB", raw[4:7]) == (0xBEE1, 0)
    pos, parts, block = 7, [], 32768
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        parts.append(data)
        if kind in (1, 4):
            yield b"".join(parts)
            parts = []


@pytest.mark.slow
def test_wandb_offline_run_files_hold_the_figures(tiny_ckpt, tmp_path):
    import os

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc, out = _train(tiny_ckpt, tmp_path, "wandb", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].rglob("*.wandb"))
    assert files
    from wandb.proto import wandb_internal_pb2

    history, config = [], {}
    for data in _wandb_records(files[0].read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif rec.WhichOneof("record_type") == "config":
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.config.update})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {h["_step"]: h for h in history if "_step" in h}
    for row in rows[1:]:
        assert logged[row["step"]]["reward"] == pytest.approx(row["reward"])
        assert logged[row["step"]]["tau_mean"] == pytest.approx(row["tau_mean"])
    assert config["run.report_to"] == "wandb" and config["rollout.group_size"] == 2


def test_a_missing_tracker_package_is_one_line_naming_the_install(tmp_path, monkeypatch):
    import importlib.util

    from introllm.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code = main(["train", "--report-to", "wandb", "--output", str(tmp_path / "x"), "--steps", "1"])
    assert code == 2
