"""Resumable training state in safetensors and JSON only (nothing is ever unpickled).

A checkpoint of a run, ``DIR/checkpoint-000010/``, is a serving checkpoint (DESIGN.md format:
model, tokenizer, head; ``introllm serve --checkpoint`` loads it) plus ``trainer_state/``:

    optimizer_model.safetensors / optimizer_head.safetensors   AdamW moments, one tensor per entry
    optimizer_model.json / optimizer_head.json                 param groups and non-tensor state
    rng.safetensors                                            torch CPU (and CUDA) RNG states
    state.json                                                 step, data position, method state,
                                                               python / numpy RNG states, config

Learning-rate schedules are functions of the step, so the step restores them.

When a checkpoint cannot be written or read back, the error is one line a user can act on:
``CheckpointWriteError`` (the disk filled up: space needed and free, and the ``--resume`` that
continues) and ``check_resumable`` (a truncated file: which one, and the newest intact earlier
checkpoint).
"""

from __future__ import annotations

import errno
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from introllm.sampler.checkpoint import CheckpointError, safetensors_problem

STATE_DIR = "trainer_state"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, name: str) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path, name: str) -> None:
    meta = json.loads((directory / f"{name}.json").read_text())
    tensors = load_file(str(directory / f"{name}.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = value
    for key, value in meta["scalars"].items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, state, gauss = values["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def write_trainer_state(
    directory: Path, *, optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any]
) -> None:
    """Write trainer_state/ into a checkpoint directory being built (inside atomic_directory)."""
    d = directory / STATE_DIR
    d.mkdir()
    for name, opt in optimizers.items():
        save_optimizer(opt, d, name)
    tensors, values = rng_state()
    save_file(tensors, str(d / "rng.safetensors"))
    (d / "state.json").write_text(json.dumps({**state, "rng": values}, indent=1))


def read_trainer_state(directory: Path) -> dict[str, Any]:
    """The checkpoint's state.json. Raises FileNotFoundError when it has none, CheckpointError
    (naming the file) when it is not JSON (a write cut short)."""
    path = directory / STATE_DIR / "state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {STATE_DIR}/state.json: not a resumable training checkpoint")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is damaged (not valid JSON: {e}){_earlier_hint(directory)}") from None


def restore_optimizers_and_rng(
    directory: Path, optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any]
) -> None:
    d = directory / STATE_DIR
    for name, opt in optimizers.items():
        load_optimizer(opt, d, name)
    set_rng_state(load_file(str(d / "rng.safetensors")), state["rng"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The furthest-trained resumable checkpoint of a run directory (checkpoint-N or final), or
    the directory itself if it is one."""
    if (run_dir / STATE_DIR).is_dir():
        return run_dir
    found = [p for p in run_dir.glob("checkpoint-*") if CHECKPOINT_RE.match(p.name) and (p / STATE_DIR).is_dir()]
    if (run_dir / "final" / STATE_DIR).is_dir():
        found.append(run_dir / "final")
    if not found:
        return None
    return max(found, key=lambda p: (read_trainer_state(p)["step"], p.name == "final"))


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the disk is full); the message is one line."""

    def __str__(self) -> str:
        return str(self.args[0])


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) says the disk or the quota is full: an OSError with
    ENOSPC/EDQUOT, or safetensors' error that carries the OS error as text."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def _step_of(path: Path) -> float:
    """A run's checkpoints in training order by name: checkpoint-N is step N, final is last."""
    m = CHECKPOINT_RE.match(path.name)
    return int(m.group(1)) if m else float("inf") if path.name == "final" else -1


def checkpoint_problems(directory: Path) -> list[tuple[Path, str]]:
    """Every damaged file of a resumable checkpoint: (path, what is wrong) for each safetensors file
    that is truncated or unreadable (``sampler.checkpoint.safetensors_problem``) and a state.json
    that is not JSON. Empty for an intact checkpoint."""
    problems = [(f, p) for f in sorted(directory.rglob("*.safetensors")) if (p := safetensors_problem(f))]
    state = directory / STATE_DIR / "state.json"
    try:
        json.loads(state.read_text())
    except FileNotFoundError:
        problems.append((state, "missing"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        problems.append((state, f"not valid JSON ({e})"))
    return problems


def newest_intact_before(directory: Path) -> Path | None:
    """The newest checkpoint of ``directory``'s run that comes before it and has no damaged file."""
    run_dir, step = directory.parent, _step_of(directory)
    earlier = [
        p
        for p in run_dir.iterdir()
        if p != directory and (p / STATE_DIR).is_dir() and (CHECKPOINT_RE.match(p.name) or p.name == "final")
    ]
    for p in sorted((p for p in earlier if _step_of(p) < step), key=_step_of, reverse=True):
        if not checkpoint_problems(p):
            return p
    return None


def _earlier_hint(directory: Path) -> str:
    earlier = newest_intact_before(directory)
    if earlier is None:
        return "; no earlier checkpoint of this run is intact: start the run again with --overwrite"
    return f"; the newest intact earlier checkpoint is {earlier}: continue from it with --resume {earlier}"


def check_resumable(directory: Path) -> None:
    """Raise CheckpointError, one line naming the damaged file and the newest intact earlier
    checkpoint, when ``directory`` cannot be resumed from (a write cut short by a full disk or a
    killed process). Reads headers and sizes only."""
    problems = checkpoint_problems(directory)
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more damaged file(s))" if len(problems) > 1 else ""
        raise CheckpointError(f"resume: {path} is {problem}{more}{_earlier_hint(directory)}")
