"""The training loop end to end on a tiny random model with the real tokenizer: outputs,
checkpoints that serve, exact resume, every method, the CLI and a two-process accelerate run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from introllm.training.config import DataConfig, MethodConfig, OptimConfig, RolloutConfig, RunConfig, TrainConfig
from introllm.training.trainer import train

pytestmark = pytest.mark.slow
REWARD = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"
TIMING = {"step_seconds", "rollout_seconds", "eval_accuracy"}  # eval runs at each run's last step


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(24))
    )
    return path


def config(ckpt, data, out, *, method="introllm", steps=3, **run) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(dataset=str(data), eval_size=4, reward=REWARD),
        rollout=RolloutConfig(batch_size=2, group_size=4, max_new_tokens=6),
        method=MethodConfig(method=method),
        optim=OptimConfig(model_lr=1e-3, head_lr=1e-3, micro_batch_size=3),
        run=RunConfig(
            model=str(ckpt),
            output=str(out),
            steps=steps,
            save_every=2,
            eval_samples=2,
            sample_every=1,
            device="cpu",
            **run,
        ),
    )


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def weights(ckpt):
    return {
        **load_file(str(Path(ckpt) / "model.safetensors")),
        **{f"head.{k}": v for k, v in load_file(str(Path(ckpt) / "temperature_head.safetensors")).items()},
    }


def start_weights(ckpt, seed=0):
    """What a run of ``seed`` starts from: the checkpoint's model and the fresh head of that seed
    (MethodConfig.head_init = "fresh", the default, for methods that train the head)."""
    from introllm.sampler.head import HeadConfig
    from introllm.training.trainer import fresh_head

    head = fresh_head(HeadConfig(32), seed)
    return {**weights(ckpt), **{f"head.{k}": v for k, v in head.state_dict().items()}}


def test_a_run_writes_metrics_samples_and_checkpoints(tiny_ckpt, problems, tmp_path):
    final = train(config(tiny_ckpt, problems, tmp_path / "run"), show_progress=False)
    run = tmp_path / "run"
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3]
    for m in metrics[1:]:
        for key in (
            "reward",
            "accuracy",
            "entropy",
            "tau_mean",
            "tau_min",
            "tau_max",
            "update_rate",
            "response_length",
            "clip_frac",
            "grad_norm_model",
            "grad_norm_head",
            "step_seconds",
            "loss_token",
            "loss_temp",
        ):
            assert isinstance(m[key], (int, float)) and m[key] == m[key], key
        assert 0.6 <= m["tau_min"] <= m["tau_mean"] <= m["tau_max"] <= 1.5
        # rollouts after an optimizer step use the new weights (the engine's packed copies refresh)
        assert m["logp_mismatch"] < 1e-4
    assert "eval_accuracy" in metrics[0] and "eval_accuracy" in metrics[-1]
    samples = read_jsonl(run / "samples.jsonl")
    assert len(samples) == 3 and len(samples[0]["completions"]) == 4
    c = samples[0]["completions"][0]
    assert len(c["tokens"]) == len(c["tau"]) == len(c["updated"]) > 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-000002"]
    assert final == run / "final" and (final / "trainer_state" / "state.json").is_file()
    assert json.loads((run / "config.json").read_text())["method"]["method"] == "introllm"
    # every weight tensor of model and head moved; the head's bounds are the run's
    before, after = start_weights(tiny_ckpt), weights(final)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []


def test_the_final_checkpoint_serves(tiny_ckpt, problems, tmp_path):
    from conftest import live_server
    from openai import OpenAI

    from introllm.sampler.models import load_model
    from introllm.server.config import ServerConfig

    final = train(config(tiny_ckpt, problems, tmp_path / "run", steps=1), show_progress=False)
    with live_server(ServerConfig(), checkpoint=load_model(final, device="cpu", dtype="float32")) as url:
        client = OpenAI(base_url=url + "/v1", api_key="none")
        out = client.completions.create(model=client.models.list().data[0].id, prompt="2 + 2 =", max_tokens=5)
        trace = out.choices[0].temperature_trace
        assert len(trace["temperatures"]) == out.usage.completion_tokens == 5
        assert all(0.6 <= t <= 1.5 for t in trace["temperatures"])


def test_resume_continues_exactly(tiny_ckpt, problems, tmp_path):
    full = train(config(tiny_ckpt, problems, tmp_path / "a", steps=4), show_progress=False)
    train(config(tiny_ckpt, problems, tmp_path / "b", steps=2), show_progress=False)
    resumed = train(
        config(tiny_ckpt, problems, tmp_path / "b", steps=4), resume_from=str(tmp_path / "b"), show_progress=False
    )
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "a" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "b" / "metrics.jsonl"))
    for name in ("optimizer_model", "optimizer_head"):
        sa = load_file(str(full / "trainer_state" / f"{name}.safetensors"))
        sb = load_file(str(resumed / "trainer_state" / f"{name}.safetensors"))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method", ["introllm", "grpo", "ead", "tampo", "prompt-level", "always-update"])
def test_every_method_trains(tiny_ckpt, problems, tmp_path, method):
    final = train(config(tiny_ckpt, problems, tmp_path / "run", method=method, steps=2), show_progress=False)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")[1:]
    trains_head = method in ("introllm", "prompt-level", "always-update")
    before, after = (start_weights(tiny_ckpt) if trains_head else weights(tiny_ckpt)), weights(final)
    head_moved = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    model_moved = any(not torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    assert model_moved
    assert head_moved == trains_head
    taus = {m["tau_mean"] for m in metrics}
    if method == "grpo":
        assert metrics[0]["policy"] == "fixed:1" and taus == {1.0}
    if method == "ead":
        assert metrics[0]["policy"].startswith("ead:") and "ead_gamma" in metrics[0] and metrics[1]["ead_gamma"] < 1
    if method == "tampo":
        assert metrics[0]["policy"] == "fixed:1" and metrics[1]["policy"].startswith("tampo")  # 10% warm-up at 1.0
        assert len(metrics[1]["tampo_probs"]) == 10 and abs(sum(metrics[1]["tampo_probs"]) - 1) < 1e-3
    if method == "prompt-level":
        assert all(m["update_rate"] <= 1 / min(1, m["response_length"]) for m in metrics)


def cli_flags(ckpt, data, out):
    return [
        "--model",
        str(ckpt),
        "--dataset",
        str(data),
        "--reward",
        REWARD,
        "--output",
        str(out),
        "--steps",
        "1",
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
    ]


def test_cli_trains_and_refuses_to_overwrite(tiny_ckpt, problems, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "introllm", "train", *cli_flags(tiny_ckpt, problems, tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final checkpoint" in out.stdout and (tmp_path / "run" / "final" / "model.safetensors").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "introllm", "train", *cli_flags(tiny_ckpt, problems, tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


def test_two_process_accelerate_run_on_cpu(tiny_ckpt, problems, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --multi_gpu selects accelerate's torchrun launcher; with --device cpu it runs DDP over gloo
    # (--cpu alone starts ONE process: accelerate's simple launcher needs mpirun for several)
    cmd = [
        "accelerate",
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "introllm",
        "train",
        *cli_flags(tiny_ckpt, problems, tmp_path / "run"),
    ]
    out = subprocess.run(
        [str(Path(sys.executable).parent / cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=900, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("2 process(es)") == 1  # two processes, one of them logs
    assert out.stdout.count("final checkpoint") == 1
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_the_optional_grpo_features_run_in_the_loop(tiny_ckpt, problems, tmp_path):
    """KL to a frozen reference, gradient checkpointing, two inner epochs, a plain prompt template
    and LR warm-up, all at once. (Masking truncated completions is pinned in test_update: this
    random model never stops early, so in the loop it would mask everything.)"""
    import dataclasses

    cfg = config(tiny_ckpt, problems, tmp_path / "run", steps=2)
    cfg.optim = dataclasses.replace(cfg.optim, kl_coef=0.1, gradient_checkpointing=True, ppo_epochs=2, warmup_steps=2)
    cfg.data = dataclasses.replace(cfg.data, template="plain")
    train(cfg, show_progress=False)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")[1:]
    assert [m["lr_model"] for m in metrics] == [pytest.approx(5e-4), pytest.approx(1e-3)]
    for m in metrics:
        assert not m["skipped"] and m["grad_norm_model"] > 0 and m["grad_norm_head"] > 0
        assert all(math.isfinite(m[k]) for k in ("loss_token", "loss_temp", "clip_frac"))


def test_head_init_checkpoint_keeps_the_checkpoints_head(tiny_ckpt, problems, tmp_path):
    keep = config(tiny_ckpt, problems, tmp_path / "keep", steps=1, seed=1)
    keep.method.head_init = "checkpoint"
    keep.optim.head_lr = 0.0  # nothing moves the head: the saved one must be the checkpoint's
    final = train(keep, show_progress=False)
    saved = load_file(str(final / "temperature_head.safetensors"))
    start = load_file(str(tiny_ckpt / "temperature_head.safetensors"))
    assert all(torch.equal(saved[k], start[k]) for k in start)


def test_a_null_control_run_sees_the_same_rollouts_with_shuffled_rewards(tiny_ckpt, problems, tmp_path):
    train(config(tiny_ckpt, problems, tmp_path / "real", steps=1), show_progress=False)
    null = config(tiny_ckpt, problems, tmp_path / "null", steps=1)
    null.method.null_control = True
    train(null, show_progress=False)
    real = read_jsonl(tmp_path / "real" / "metrics.jsonl")[1]
    shuffled = read_jsonl(tmp_path / "null" / "metrics.jsonl")[1]
    # the same samples (same seed, same start): same mean reward, tau and lengths; other advantages
    for key in ("reward", "tau_mean", "response_length", "update_rate"):
        assert shuffled[key] == pytest.approx(real[key]), key
    assert json.loads((tmp_path / "null" / "config.json").read_text())["method"]["null_control"] is True
