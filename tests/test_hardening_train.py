"""Issue 26, training failures a user meets, through ``introllm train`` (in-process ``main``): a
full disk while writing a checkpoint, a truncated checkpoint file on ``--resume``, and the hidden
temporaries a killed checkpoint write leaves. Each ends in one line that says what happened and
what to run, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from introllm.cli import main
from introllm.sampler.checkpoint import remove_stale_temporaries, safetensors_problem

pytestmark = pytest.mark.slow
REWARD = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(24))
    )
    return path


def flags(ckpt, data, out, steps=3):
    return [
        *("--model", str(ckpt), "--dataset", str(data), "--reward", REWARD, "--output", str(out)),
        *("--steps", str(steps), "--save-every", "1", "--batch-size", "2", "--group-size", "2"),
        *("--max-new-tokens", "4", "--eval-size", "2", "--eval-samples", "1", "--device", "cpu", "--no-progress"),
    ]


def _errors(err: str) -> list[str]:
    """The error lines of a command's stderr (its log lines aside)."""
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def finished_run(tiny_ckpt, problems, tmp_path_factory):
    """A 3-step run saved at every step: checkpoint-000001, checkpoint-000002 (the last two kept) and final."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *flags(tiny_ckpt, problems, out)]) == 0
    assert {p.name for p in out.iterdir() if (p / "trainer_state").is_dir()} == {
        "checkpoint-000001",
        "checkpoint-000002",
        "final",
    }
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------ item 9: a full disk


def test_a_full_disk_ends_in_one_line_naming_the_checkpoint_space_and_resume(
    tiny_ckpt, problems, tmp_path, monkeypatch, capsys
):
    from safetensors import SafetensorError

    from introllm.training import state

    real_save = state.save_file

    def full_disk(tensors, filename, *args, **kwargs):  # what safetensors raises on ENOSPC (checked on a tmpfs)
        if "checkpoint-000002" in str(filename):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(state, "save_file", full_disk)
    out = tmp_path / "run"
    assert main(["train", *flags(tiny_ckpt, problems, out)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert line.startswith(
        f"introllm train: error: no space left on the device while writing checkpoint {out}/checkpoint-000002"
    )
    assert "it needs about " in line and " are free in " in line
    assert line.endswith(f"continue with: introllm train --resume {out}")
    # the checkpoint before it is intact, and nothing half-written is left
    assert sorted(p.name for p in out.glob("*checkpoint-*")) == ["checkpoint-000001"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # and the advice works: the run continues from checkpoint-000001 to the end
    monkeypatch.setattr(state, "save_file", real_save)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert (out / "final" / "model.safetensors").is_file()


def test_an_unrelated_write_error_is_not_called_a_full_disk():
    from introllm.training.state import is_disk_full

    assert is_disk_full(OSError(28, "No space left on device"))
    assert not is_disk_full(OSError(13, "Permission denied"))
    assert not is_disk_full(RuntimeError("Error while serializing: I/O error: Permission denied (os error 13)"))


# ------------------------------------------------------------------ item 10: a truncated checkpoint file


def test_resume_on_a_truncated_file_names_it_and_the_newest_intact_earlier_checkpoint(finished_run, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    _truncate(out / "final" / "model.safetensors")
    _truncate(out / "checkpoint-000002" / "trainer_state" / "optimizer_model.safetensors")
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    (line,) = _errors(capsys.readouterr().err)
    damaged = out / "final" / "model.safetensors"
    earlier = out / "checkpoint-000001"  # checkpoint-000002 is damaged too: the newest *intact* one
    assert line.startswith(f"introllm train: error: resume: {damaged} is truncated (")
    assert line.endswith(f"the newest intact earlier checkpoint is {earlier}: continue from it with --resume {earlier}")
    # the advice works: resuming from it redoes steps 2 and 3 and replaces the damaged checkpoints
    assert main(["train", "--resume", str(earlier), "--no-progress"]) == 0
    assert safetensors_problem(out / "final" / "model.safetensors") is None


def test_resume_on_a_damaged_state_file_and_without_any_intact_checkpoint(finished_run, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    (out / "final" / "trainer_state" / "state.json").write_text('{"step": 3, "da')
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert f"{out / 'final' / 'trainer_state' / 'state.json'} is damaged (not valid JSON" in line
    for ckpt in ("checkpoint-000001", "checkpoint-000002"):
        _truncate(out / ckpt / "temperature_head.safetensors")
    (out / "final" / "trainer_state" / "state.json").write_text(
        (finished_run / "final" / "trainer_state" / "state.json").read_text()
    )
    _truncate(out / "final" / "temperature_head.safetensors")
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "temperature_head.safetensors is truncated" in line
    assert line.endswith("no earlier checkpoint of this run is intact: start the run again with --overwrite")


def test_safetensors_problem_tells_whole_from_cut_files(finished_run, tmp_path):
    path = tmp_path / "model.safetensors"
    data = (finished_run / "final" / "model.safetensors").read_bytes()
    path.write_bytes(data)
    assert safetensors_problem(path) is None
    for cut, words in [(len(data) - 1, "truncated ("), (100, "truncated ("), (5, "not even a header")]:
        path.write_bytes(data[:cut])
        assert words in safetensors_problem(path)
    path.write_bytes(data[:8] + b"{" * (len(data) - 8))
    assert safetensors_problem(path) == "damaged (its header is not valid JSON)"


# ------------------------------------------------------------------ item 11: what a killed write leaves


def _stale(out: Path, name: str) -> Path:
    """What a checkpoint write killed midway leaves: a hidden temporary with part of a checkpoint."""
    tmp = out / name
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\0" * 100_000)
    return tmp


def test_resume_removes_stale_temporaries_and_says_so(finished_run, tmp_path, caplog):
    out = _copy(finished_run, tmp_path)
    stale = [_stale(out, ".checkpoint-000003.tmp-0a1b2c3d"), _stale(out, ".final.tmp-deadbeef")]
    keep = out / ".notes"  # hidden, but not ours
    keep.write_text("mine")
    with caplog.at_level(logging.WARNING, logger="introllm"):
        assert main(["train", "--resume", str(out / "checkpoint-000002"), "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()
    for p in stale:
        assert f"removed {p}, left by a checkpoint write that was interrupted" in caplog.text


def test_a_fresh_start_in_a_directory_holding_only_stale_temporaries(tiny_ckpt, problems, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    stale = _stale(out, ".checkpoint-000001.tmp-0a1b2c3d")
    with caplog.at_level(logging.WARNING, logger="introllm"):
        assert main(["train", *flags(tiny_ckpt, problems, out, steps=1)]) == 0  # not "exists and is not empty"
    assert not stale.exists() and f"removed {stale}" in caplog.text
    assert (out / "final" / "model.safetensors").is_file()


def test_a_write_killed_between_its_two_renames_is_restored_not_removed(tmp_path):
    old = tmp_path / ".final.old-0a1b2c3d"  # final was moved aside, the new one never took its place
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"weights")
    replaced = tmp_path / ".checkpoint-000002.old-0a1b2c3d"  # here the new one did: the old one goes
    replaced.mkdir()
    (tmp_path / "checkpoint-000002").mkdir()
    assert remove_stale_temporaries(tmp_path) == [replaced]
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == b"weights" and not old.exists()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-000002", "final"]
