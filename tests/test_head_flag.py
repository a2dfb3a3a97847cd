"""``--head PATH|init`` (paper B.1, plug-and-play): a head plugs onto a compatible checkpoint; a head
for another hidden size or base-model family is refused with a message naming both; another
weights digest of the same family only warns; ``init`` is the untrained start."""

import logging

import pytest
import torch
from conftest import random_head, tiny_llama

from introllm.sampler.checkpoint import CheckpointError, save_checkpoint, save_head, weights_digest
from introllm.sampler.models import initial_head, load_model


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ck"
    save_checkpoint(path, tiny_llama(), random_head(48, seed=1))
    return path


def test_head_path_replaces_the_checkpoints_own_head(ckpt, tmp_path):
    model = tiny_llama()
    head = random_head(48, seed=7)
    save_head(tmp_path / "h", head, model.config, model)
    ck = load_model(ckpt, device="cpu", dtype="float32", head=str(tmp_path / "h"))
    assert all(torch.equal(a, b) for a, b in zip(ck.head.state_dict().values(), head.state_dict().values()))


def test_head_init_is_the_untrained_start(ckpt):
    ck = load_model(ckpt, device="cpu", dtype="float32", head="init")
    init = initial_head(48)
    assert all(torch.equal(a, b) for a, b in zip(ck.head.state_dict().values(), init.state_dict().values()))
    own = load_model(ckpt, device="cpu", dtype="float32").head
    assert not all(torch.equal(a, b) for a, b in zip(own.state_dict().values(), init.state_dict().values()))


def test_a_head_for_another_hidden_size_is_refused_naming_both(ckpt, tmp_path):
    other = tiny_llama(hidden_size=64)
    save_head(tmp_path / "h64", random_head(64), other.config, other)
    with pytest.raises(CheckpointError, match="hidden size 64, but this model's hidden size is 48"):
        load_model(ckpt, device="cpu", dtype="float32", head=str(tmp_path / "h64"))


def test_a_head_for_another_base_family_is_refused_naming_both(ckpt, tmp_path):
    other = tiny_llama(num_hidden_layers=3)  # same hidden size, another model
    save_head(tmp_path / "h", random_head(48), other.config, other)
    with pytest.raises(CheckpointError, match="num_hidden_layers=3.*but this model is.*num_hidden_layers=2"):
        load_model(ckpt, device="cpu", dtype="float32", head=str(tmp_path / "h"))


def test_other_weights_of_the_same_family_only_warn(ckpt, tmp_path, caplog):
    finetuned = tiny_llama(seed=5)  # the same architecture, other weights
    assert weights_digest(finetuned) != weights_digest(tiny_llama())
    save_head(tmp_path / "h", random_head(48), finetuned.config, finetuned)
    with caplog.at_level(logging.WARNING):
        ck = load_model(ckpt, device="cpu", dtype="float32", head=str(tmp_path / "h"))
    assert ck.head is not None and "other weights of this architecture" in caplog.text


def test_the_weights_digest_does_not_depend_on_the_load_dtype():
    model = tiny_llama()
    assert weights_digest(model) == weights_digest(tiny_llama().to(torch.bfloat16))


def test_cli_errors_name_the_problem_in_one_line(ckpt, tmp_path, capsys):
    from introllm.cli import main

    assert main(["generate", "hi", "--checkpoint", str(ckpt), "--head", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and "Traceback" not in err
    other = tiny_llama(hidden_size=64)
    save_head(tmp_path / "h64", random_head(64), other.config, other)
    assert main(["bench", "--checkpoint", str(ckpt), "--head", str(tmp_path / "h64")]) == 2
    assert "hidden size 64" in capsys.readouterr().err
