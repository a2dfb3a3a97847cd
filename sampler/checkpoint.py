"""The checkpoint format (DESIGN.md): a directory holding

    config.json, model.safetensors, tokenizer files     the base model, as Hugging Face writes it
    temperature_head.safetensors                         the head's weights
    temperature_head.json                                {"format", "hidden_size", "tau_min", "tau_max",
                                                          "tau_init", "base_model": fingerprint}

Only safetensors and JSON are read; nothing is unpickled and remote code stays off unless asked
for. A head loads onto any model of its base model's family ("plug-and-play", paper B.1: models of
the same family that were fine-tuned or compressed): a different hidden size is always refused; a
head plugged on with ``--head`` (``load_head(..., strict=True)``) is also refused when the family
fingerprint (model type, hidden size, layers, vocabulary) differs, and only warns when the
weights digest does (the same architecture, other weights).

Directories are written atomically: into a hidden sibling first, then renamed into place, so a
crash leaves either the previous checkpoint or the new one, never half of one. A process killed
while writing leaves its hidden sibling behind (``.NAME.tmp-XXXXXXXX``, up to a checkpoint's size);
``remove_stale_temporaries`` clears them (a resumed or restarted training run calls it), and
``safetensors_problem`` tells a truncated weights file from a whole one without loading it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .head import HeadConfig, TemperatureHead

log = logging.getLogger(__name__)

HEAD_WEIGHTS = "temperature_head.safetensors"
HEAD_CONFIG = "temperature_head.json"
HEAD_FORMAT = "introllm.temperature_head/1"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, or does not fit the model it is loaded onto."""


@dataclass
class Checkpoint:
    model: nn.Module
    head: TemperatureHead | None
    tokenizer: Any  # None when the directory holds no tokenizer files
    path: Path


def base_fingerprint(model_config) -> dict[str, Any]:
    """What identifies a base model's family and shape, stored with the head."""
    cfg = model_config.get_text_config(decoder=True) if hasattr(model_config, "get_text_config") else model_config
    return {
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size,
    }


WEIGHTS_DIGEST_ELEMENTS = 4096


def weights_digest(model: nn.Module) -> str:
    """sha256 of the first 4096 elements of every parameter (in name order), rounded to bfloat16.

    Identifies the base weights a head was trained on, cheaply (no pass over all weights) and
    independently of the load dtype: float32 weights and their bfloat16 load give the same digest.
    Any fine-tuning that touches a tensor's leading elements changes it. Returns 64 hex digits.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        head = p.detach().reshape(-1)[:WEIGHTS_DIGEST_ELEMENTS].to("cpu", torch.bfloat16).contiguous()
        h.update(name.encode())
        h.update(head.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``final`` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        mode = 0o666 & ~_umask()
        for f in tmp.rglob("*"):  # data on disk before the rename makes it visible
            if not f.is_file():
                continue
            # safetensors >= 0.8 creates its files 0600 whatever the umask; a checkpoint written by
            # one user (root in an image build, a trainer) must stay readable by the server's user.
            os.chmod(f, mode)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}$")


def is_write_temporary(name: str) -> bool:
    """Whether a file name is one ``atomic_directory`` gives its temporaries (``.NAME.tmp-XXXXXXXX``,
    ``.NAME.old-XXXXXXXX``)."""
    return _TEMPORARY.match(name) is not None


def remove_stale_temporaries(parent: str | os.PathLike) -> list[Path]:
    """Remove what interrupted ``atomic_directory`` writes left in ``parent``; returns what was removed.

    ``.NAME.tmp-*`` is a write that never finished: removed. ``.NAME.old-*`` is the previous
    version of NAME, moved aside just before the new one took its place: removed when NAME
    exists, renamed back to NAME when the process died between the two renames (NAME missing).
    Call it only where no other process is writing (a training run's own output directory)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for path in sorted(parent.iterdir()):
        m = _TEMPORARY.match(path.name)
        if m is None or not path.is_dir():
            continue
        final = parent / m.group("name")
        if m.group("kind") == "old" and not final.exists():
            os.replace(path, final)
            log.warning("restored %s from %s (a checkpoint write was interrupted between its renames)", final, path)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def directory_size(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a safetensors file, read from its header and its size only (nothing is
    loaded): None for a whole file, else what is wrong, to follow "FILE is" ("truncated (1.2 MB
    on disk of the 5.0 MB its header describes)", "damaged (its header is not valid JSON)"). A file cut short by a full disk or a killed write fails here, where
    loading it would fail with an error that names no file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, not even a header)"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"truncated ({format_size(size)} on disk, its header alone announces {format_size(length + 8)})"
            header = json.loads(f.read(length))
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return "damaged (its header is not valid JSON)"
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "damaged (its header does not describe tensors)"
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        return f"truncated ({format_size(size)} on disk of the {format_size(needed)} its header describes)"
    return None


def format_size(num_bytes: float) -> str:
    """``1.61 GB``, ``12.3 MB`` or ``4167 bytes``."""
    if num_bytes >= 1e9:
        return f"{num_bytes / 1e9:.2f} GB"
    if num_bytes >= 1e6:
        return f"{num_bytes / 1e6:.1f} MB"
    return f"{int(num_bytes)} bytes"


def write_head(
    directory: Path, head: TemperatureHead, model_config, model: nn.Module | None = None, extra: dict | None = None
) -> None:
    """Write the head's two files into an existing directory (use inside ``atomic_directory``).

    With ``model``, the base model's ``weights_digest`` is recorded too (``base_weights_sha256``);
    ``extra`` adds JSON fields (e.g. how the head was trained)."""
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(directory / HEAD_WEIGHTS), metadata={"format": HEAD_FORMAT})
    meta = {"format": HEAD_FORMAT, **asdict(head.config), "base_model": base_fingerprint(model_config)}
    if model is not None:
        meta["base_weights_sha256"] = weights_digest(model)
    meta.update(extra or {})
    (directory / HEAD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def save_checkpoint(
    directory: str | os.PathLike, model: nn.Module, head: TemperatureHead | None, tokenizer=None
) -> Path:
    """Save base model (+ tokenizer) and head as one checkpoint directory, atomically."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if head is not None:
            write_head(tmp, head, model.config)
    return directory


def save_head(
    directory: str | os.PathLike, head: TemperatureHead, model_config, model: nn.Module | None = None
) -> Path:
    """Save only the head (a few hundred KB), e.g. to plug it onto another copy of the base model."""
    with atomic_directory(directory) as tmp:
        write_head(tmp, head, model_config, model)
    return Path(directory)


def read_head_meta(directory: str | os.PathLike) -> dict:
    """The head's JSON file as a dict (CheckpointError when missing or not JSON)."""
    path = Path(directory) / HEAD_CONFIG
    if not Path(directory).exists():
        raise CheckpointError(f"head directory {directory} does not exist")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no temperature head ({HEAD_CONFIG} is missing)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def read_head_config(directory: str | os.PathLike) -> tuple[HeadConfig, dict]:
    path = Path(directory) / HEAD_CONFIG
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no temperature head ({HEAD_CONFIG} is missing)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if meta.get("format") != HEAD_FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {HEAD_FORMAT!r}")
    try:
        config = HeadConfig(**{k: meta[k] for k in ("hidden_size", "tau_min", "tau_max", "tau_init")})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} does not describe a valid head: {e}") from None
    return config, meta.get("base_model", {})


def load_head(
    directory: str | os.PathLike,
    model_config=None,
    device="cpu",
    *,
    strict: bool = False,
    model: nn.Module | None = None,
) -> TemperatureHead:
    """Load a head; when ``model_config`` is given, check the head fits that model.

    Raises CheckpointError when the hidden sizes differ, naming both. A different base-model
    fingerprint (model type, layers, vocabulary) is refused with ``strict`` (``--head PATH``),
    naming both, and only warns otherwise (a checkpoint's own head). With ``model``, a different
    weights digest (the same family, other weights: fine-tuned or compressed, paper B.1) warns.
    """
    config, fingerprint = read_head_config(directory)
    if model_config is not None:
        target = base_fingerprint(model_config)
        if config.hidden_size != target["hidden_size"]:
            raise CheckpointError(
                f"the temperature head in {directory} was built for hidden size {config.hidden_size}, "
                f"but this model's hidden size is {target['hidden_size']}"
            )
        if fingerprint and fingerprint != target:
            if strict:
                raise CheckpointError(
                    f"the temperature head in {directory} was trained on base model {_describe(fingerprint)}, "
                    f"but this model is {_describe(target)}"
                )
            log.warning("head in %s was trained on %s; loading it onto %s", directory, fingerprint, target)
    if model is not None:
        recorded = read_head_meta(directory).get("base_weights_sha256")
        if recorded and recorded != weights_digest(model):
            log.warning(
                "head in %s was trained on other weights of this architecture (weights digest %s..., this model %s...); "
                "plugging it on as is",
                directory,
                recorded[:12],
                weights_digest(model)[:12],
            )
    head = TemperatureHead(config)
    path = Path(directory) / HEAD_WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{directory} has {HEAD_CONFIG} but no {HEAD_WEIGHTS}")
    state = load_file(str(path))
    try:
        head.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its {HEAD_CONFIG}: {e}") from None
    return head.to(device)


def _describe(fingerprint: dict) -> str:
    return ", ".join(
        f"{k}={fingerprint.get(k)}" for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
    )


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    require_head: bool = True,
) -> Checkpoint:
    """Load base model, tokenizer and head from a checkpoint directory (safetensors only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        if (directory / HEAD_CONFIG).is_file():
            raise CheckpointError(
                f"{directory} holds only a temperature head (head-only training); plug it onto its base model "
                f"with --head {directory}"
            )
        raise CheckpointError(f"{directory} is not a checkpoint directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    ).to(device)
    model.eval()
    tokenizer = None
    if any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
    head = None
    if require_head or (directory / HEAD_CONFIG).exists():
        head = load_head(directory, model.config, device)
    return Checkpoint(model=model, head=head, tokenizer=tokenizer, path=directory)
