import json
import os

import pytest
import torch
from conftest import random_head, tiny_llama

from introllm.sampler import Engine, HeadConfig, SamplingParams, TemperatureHead
from introllm.sampler.checkpoint import (
    HEAD_CONFIG,
    CheckpointError,
    atomic_directory,
    load_checkpoint,
    load_head,
    save_checkpoint,
    save_head,
)


def _tokens(model, head):
    seqs = Engine(model, head).generate([[5, 6, 7], [9, 10]], SamplingParams(max_new_tokens=8, seed=3), n=2)
    return [(s.token_ids, s.trace.tau) for g in seqs for s in g]


def test_round_trip(tmp_path):
    model, head = tiny_llama(), random_head(48)
    save_checkpoint(tmp_path / "ck", model, head)
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert all(f.endswith((".json", ".safetensors", ".jinja")) for f in files), files  # nothing to unpickle
    ck = load_checkpoint(tmp_path / "ck")
    for a, b in zip(model.state_dict().values(), ck.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(head.state_dict().values(), ck.head.state_dict().values()):
        assert torch.equal(a, b)
    assert ck.head.config == head.config
    assert _tokens(model, head) == _tokens(ck.model, ck.head)
    meta = json.loads((tmp_path / "ck" / HEAD_CONFIG).read_text())
    assert meta["hidden_size"] == 48 and meta["base_model"]["model_type"] == "llama"


def test_head_plugs_onto_another_copy_of_the_base(tmp_path):
    model, head = tiny_llama(), random_head(48)
    save_head(tmp_path / "head", head, model.config)
    other = tiny_llama()  # a separate copy of the same base model
    loaded = load_head(tmp_path / "head", other.config)
    assert _tokens(model, head) == _tokens(other, loaded)


def test_wrong_size_head_refused(tmp_path):
    save_head(tmp_path / "head", TemperatureHead(HeadConfig(hidden_size=64)), tiny_llama(hidden_size=64).config)
    with pytest.raises(CheckpointError, match="built for hidden size 64, but this model's hidden size is 48"):
        load_head(tmp_path / "head", tiny_llama().config)


def test_corrupt_or_missing_head_files(tmp_path):
    model = tiny_llama()
    save_checkpoint(tmp_path / "ck", model, None)
    with pytest.raises(CheckpointError, match="has no temperature head"):
        load_checkpoint(tmp_path / "ck")
    assert load_checkpoint(tmp_path / "ck", require_head=False).head is None
    (tmp_path / "ck" / HEAD_CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_head(tmp_path / "ck")
    (tmp_path / "ck" / HEAD_CONFIG).write_text(
        json.dumps(
            {"format": "introllm.temperature_head/1", "hidden_size": 48, "tau_min": 2, "tau_max": 1, "tau_init": 1}
        )
    )
    with pytest.raises(CheckpointError, match="tau_min < tau_max"):
        load_head(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_pickled_weights_are_never_loaded(tmp_path):
    model = tiny_llama()
    ck = tmp_path / "ck"
    save_checkpoint(ck, model, random_head(48))
    (ck / "model.safetensors").unlink()
    torch.save(model.state_dict(), ck / "pytorch_model.bin")  # a pickle, as old checkpoints have
    with pytest.raises(OSError, match="model.safetensors"):
        load_checkpoint(ck)


def test_atomic_write_keeps_previous_checkpoint_on_failure(tmp_path):
    model, head = tiny_llama(), random_head(48)
    target = tmp_path / "ck"
    save_checkpoint(target, model, head)
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary left behind
    save_checkpoint(target, model, random_head(48, seed=1))  # overwriting works and replaces
    assert not torch.equal(load_head(target).fc1.weight, head.fc1.weight)


def test_files_are_readable_by_other_users(tmp_path):
    """safetensors creates its files 0600; a checkpoint written by root (an image build) must be
    readable by the server's non-root user, as the umask says."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck", tiny_llama(), random_head(48))
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in path.iterdir() if f.is_file()}
    assert "temperature_head.safetensors" in modes and "model.safetensors" in modes
    assert set(modes.values()) == {0o644}, modes
