"""The trained default head shipped for the embedded SmolLM2-135M-Instruct: present in the package,
small, made by the committed config, recorded for exactly the embedded base model, different from
the untrained start, and what the embedded model loads by default (the first log line says so)."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from introllm.sampler.checkpoint import HEAD_CONFIG, HEAD_WEIGHTS, base_fingerprint, weights_digest
from introllm.sampler.models import initial_head, load_model, shipped_head_dir
from introllm.training.config import TrainConfig, read_config_file

pytestmark = pytest.mark.slow


def test_the_shipped_head_is_small_safetensors_and_json_made_by_its_config():
    d = shipped_head_dir()
    assert (d / HEAD_WEIGHTS).stat().st_size < 1_000_000  # well under 2 MB
    meta = json.loads((d / HEAD_CONFIG).read_text())
    cfg = TrainConfig.from_dict(read_config_file(d / "train.toml"))
    assert cfg.method.freeze_model and cfg.method.method == "introllm"
    assert meta["head_only"] is True
    assert meta["trained_with"] == {"method": cfg.method.method, "dataset": cfg.data.dataset, "steps": cfg.run.steps}
    assert (meta["tau_min"], meta["tau_max"]) == (cfg.rollout.tau_min, cfg.rollout.tau_max)
    # no machine's path travels with it (issue 27): the base as the config names it
    assert meta["base_checkpoint"] == (cfg.run.model or "embedded")
    assert "/root" not in json.dumps(meta) and "/home" not in json.dumps(meta)


def test_the_embedded_model_loads_the_shipped_head_by_default(caplog):
    with caplog.at_level(logging.INFO, logger="introllm"):
        ck = load_model(device="cpu", dtype="float32")
    first = [r.getMessage() for r in caplog.records if r.name.startswith("introllm")][0]
    assert "trained default head" in first and str(shipped_head_dir()) in first
    shipped = load_file(str(shipped_head_dir() / HEAD_WEIGHTS))
    assert all(torch.equal(ck.head.state_dict()[k], v) for k, v in shipped.items())
    # recorded for exactly this base model: its family fingerprint and its weights digest
    meta = json.loads((shipped_head_dir() / HEAD_CONFIG).read_text())
    assert meta["base_model"] == base_fingerprint(ck.model.config)
    assert meta["base_weights_sha256"] == weights_digest(ck.model)
    # and it is not the untrained start: the head learned something
    init = initial_head(ck.head.config.hidden_size).state_dict()
    moved = max(float((v - init[k]).abs().max()) for k, v in shipped.items())
    assert moved > 1e-3
    # --head init still gives the untrained start on the same model
    untrained = load_model(device="cpu", dtype="float32", head="init").head
    assert all(torch.equal(untrained.state_dict()[k], v) for k, v in init.items())
