"""Head-only training (``freeze_model``) on a tiny random model with the real tokenizer: the base's
weights stay bit-identical, only the head moves, checkpoints hold the head and the base's
fingerprint (no base weights), a run resumes exactly, and the result plugs on with ``--head``."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from introllm.sampler.checkpoint import CheckpointError, load_checkpoint, weights_digest
from introllm.training.config import (
    ConfigError,
    DataConfig,
    MethodConfig,
    OptimConfig,
    RolloutConfig,
    RunConfig,
    TrainConfig,
)
from introllm.training.trainer import train

pytestmark = pytest.mark.slow
REWARD = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(24))
    )
    return path


def config(ckpt, data, out, *, steps=3, method="introllm") -> TrainConfig:
    return TrainConfig(
        data=DataConfig(dataset=str(data), eval_size=4, reward=REWARD),
        rollout=RolloutConfig(batch_size=2, group_size=4, max_new_tokens=6),
        method=MethodConfig(method=method, freeze_model=True),
        optim=OptimConfig(model_lr=1e-3, head_lr=1e-2, micro_batch_size=3),
        run=RunConfig(
            model=str(ckpt), output=str(out), steps=steps, save_every=2, eval_samples=2, sample_every=1, device="cpu"
        ),
    )


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_head_only_training_leaves_the_base_bit_identical(tiny_ckpt, problems, tmp_path):
    base_before = load_file(str(tiny_ckpt / "model.safetensors"))
    model = load_checkpoint(tiny_ckpt, require_head=False).model
    digest = weights_digest(model)
    head_before = load_file(str(tiny_ckpt / "temperature_head.safetensors"))
    final = train(config(tiny_ckpt, problems, tmp_path / "run"), show_progress=False)
    # the base model on disk and the one the run trained against are untouched, bit for bit
    assert all(torch.equal(v, load_file(str(tiny_ckpt / "model.safetensors"))[k]) for k, v in base_before.items())
    assert all(torch.equal(p, base_before[k]) for k, p in model.state_dict().items() if k in base_before)
    # the checkpoint holds the head and the trainer state only: no copy of the base
    names = sorted(p.name for p in final.iterdir())
    assert names == ["temperature_head.json", "temperature_head.safetensors", "trainer_state"]
    assert not (final / "trainer_state" / "optimizer_model.safetensors").exists()
    meta = json.loads((final / "temperature_head.json").read_text())
    assert meta["head_only"] is True and meta["base_weights_sha256"] == digest
    assert meta["base_model"]["hidden_size"] == 32
    head_after = load_file(str(final / "temperature_head.safetensors"))
    assert any(not torch.equal(head_before[k], head_after[k]) for k in head_before)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")[1:]
    assert all(m["grad_norm_model"] == 0.0 and m["loss_token"] == 0.0 for m in metrics)
    # the held-out evaluations at the start and the end are kept as eval records with their summaries
    for step in (0, 3):
        records = read_jsonl(tmp_path / "run" / "eval" / f"step-{step:06d}.jsonl")
        assert len(records) == 4 * 2 and all(len(r["tau"]) == r["num_tokens"] for r in records)
        summary = json.loads((tmp_path / "run" / "eval" / f"step-{step:06d}.summary.json").read_text())
        assert summary["num_problems"] == 4 and 0.6 <= summary["tau_mean"] <= 1.5
    assert any(m["grad_norm_head"] > 0 for m in metrics)


def test_a_head_only_run_resumes_exactly(tiny_ckpt, problems, tmp_path):
    full = train(config(tiny_ckpt, problems, tmp_path / "a", steps=4), show_progress=False)
    train(config(tiny_ckpt, problems, tmp_path / "b", steps=2), show_progress=False)
    resumed = train(
        config(tiny_ckpt, problems, tmp_path / "b", steps=4), resume_from=str(tmp_path / "b"), show_progress=False
    )
    a, b = (
        load_file(str(full / "temperature_head.safetensors")),
        load_file(str(resumed / "temperature_head.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_head_only_checkpoint_plugs_on_with_head_and_not_as_a_checkpoint(tiny_ckpt, problems, tmp_path):
    from introllm.sampler.models import load_model

    final = train(config(tiny_ckpt, problems, tmp_path / "run", steps=1), show_progress=False)
    ck = load_model(tiny_ckpt, device="cpu", dtype="float32", head=str(final))
    trained = load_file(str(final / "temperature_head.safetensors"))
    assert all(torch.equal(ck.head.state_dict()[k], trained[k]) for k in trained)
    with pytest.raises(CheckpointError, match="holds only a temperature head.*--head"):
        load_model(final, device="cpu", dtype="float32")


@pytest.mark.parametrize("method", ["grpo", "ead", "tampo"])
def test_freeze_model_needs_a_method_that_learns_the_head(method):
    with pytest.raises(ConfigError, match="freeze_model"):
        MethodConfig(method=method, freeze_model=True)


def test_freeze_model_refuses_a_kl_penalty():
    with pytest.raises(ConfigError, match="kl_coef"):
        TrainConfig(method=MethodConfig(freeze_model=True), optim=OptimConfig(kl_coef=0.1))


def test_a_head_only_update_touches_only_the_head():
    from conftest import random_head, tiny_llama

    from introllm.sampler import Engine, SamplingParams, build_policy
    from introllm.training.losses import group_advantages
    from introllm.training.update import PolicyScorer, update

    model, head = tiny_llama(), random_head(48, scale=0.3)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in head.state_dict().items()}
    seqs = [
        s
        for g in Engine(model, head).generate([[5, 6, 7], [8, 9]], SamplingParams(max_new_tokens=6, seed=1), n=4)
        for s in g
    ]
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 4)
    model.train()
    stats = update(
        PolicyScorer(model, head, freeze_model=True),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers={"optimizer_head": torch.optim.AdamW(head.parameters(), lr=1e-2)},
        pad_id=0,
        optim=OptimConfig(clip_eps=0.2, max_grad_norm=1.0, micro_batch_size=3),
    )
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in head.state_dict().items())
    assert stats.grad_norm_model == 0.0 and stats.grad_norm_head > 0 and stats.loss_token == 0.0


def test_the_step_benchmark_times_head_only_against_joint_steps():
    from conftest import random_head, tiny_llama

    from introllm.benchmarks.train_step import train_step_overhead

    model, head = tiny_llama(), random_head(48, scale=0.3)
    result = train_step_overhead(
        model,
        head,
        [[5, 6, 7], [8, 9]],
        group_size=2,
        new_tokens=4,
        repeats=2,
        micro_batch_size=2,
        methods=("head-only", "introllm"),
    )
    assert len(result["raw"]["head-only"]["step"]) == len(result["raw"]["introllm"]["step"]) == 2
    assert result["median_rollout_seconds"]["head-only"] > 0
