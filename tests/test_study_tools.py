"""The pieces Study 3 is built from (docs/results.md): seeded head initialisation, the null
control's reward shuffling, the mean-matched (shifted) policy, EAD scaled to the answer length,
Fig. 4's context pairing with a minimum count, the evaluation dtype of trained checkpoints, and
the report's intervals over seeds."""

import json
import math

import pytest
import torch
from conftest import random_head

from introllm.sampler import HeadConfig, build_policy
from introllm.sampler.policies import EADPolicy, ShiftedPolicy
from introllm.sampler.rng import uniforms


def test_fresh_heads_differ_by_seed_and_seed_0_is_the_embedded_checkpoints_head():
    from introllm.sampler.head import SOFTPLUS_INV_1
    from introllm.sampler.models import initial_head
    from introllm.training.trainer import fresh_head

    a, b, zero = fresh_head(HeadConfig(64), 1), fresh_head(HeadConfig(64), 2), fresh_head(HeadConfig(64), 0)
    assert not torch.equal(a.fc1.weight, b.fc1.weight)
    assert torch.equal(fresh_head(HeadConfig(64), 1).fc1.weight, a.fc1.weight)  # the seed fixes it
    ref = initial_head(64)
    assert all(torch.equal(p, q) for p, q in zip(zero.state_dict().values(), ref.state_dict().values()))
    # every seed starts at the paper's maximum-entropy point: P(update) 0.5, Beta(1, 1)
    assert a.fc2.bias.tolist() == pytest.approx([0.0, SOFTPLUS_INV_1, SOFTPLUS_INV_1])


def test_null_control_shuffles_rewards_over_the_step_and_recomputes_advantages():
    from introllm.training.losses import group_advantages
    from introllm.training.rollout import Rollout, shuffle_rewards

    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0] * 2)
    ro = Rollout(problems=[object()] * 4, sequences=[], texts=[], rewards=rewards, adv=group_advantages(rewards, 4))
    a, b, c = shuffle_rewards(ro, seed=1), shuffle_rewards(ro, seed=1), shuffle_rewards(ro, seed=2)
    assert sorted(a.rewards.tolist()) == sorted(rewards.tolist())  # the same rewards, the same mean
    assert torch.equal(a.rewards, b.rewards) and not torch.equal(a.rewards, c.rewards)  # seeded
    assert not torch.equal(a.rewards, rewards)
    assert torch.equal(a.adv, group_advantages(a.rewards, 4))  # advantages of the shuffled rewards
    assert torch.equal(ro.rewards, rewards)  # the original rollout is untouched


@torch.no_grad()
def test_shifted_policy_moves_the_learned_temperatures_and_nothing_else():
    head = random_head(16, seed=3)
    h = torch.randn(64, 16)
    step = torch.ones(64, dtype=torch.long)
    rand = uniforms(torch.arange(64), step, torch.zeros(64, dtype=torch.long))
    tau_prev = torch.full((64,), 0.9)
    learned = build_policy("learned", head).act(h, step, tau_prev, rand)
    shifted_policy = build_policy("shifted:delta=-0.3", head)
    assert isinstance(shifted_policy, ShiftedPolicy) and shifted_policy.spec == "shifted:delta=-0.3"
    shifted = shifted_policy.act(h, step, tau_prev, rand)
    assert torch.equal(shifted.updated, learned.updated) and torch.equal(shifted.z, learned.z)  # same draws
    up = learned.updated
    assert 0 < int(up.sum()) < 64
    torch.testing.assert_close(shifted.tau[up], (learned.tau[up] - 0.3).clamp_min(0.01))
    assert torch.equal(shifted.tau[~up], tau_prev[~up])  # a kept tau is the previous (already shifted) one
    low = build_policy("shifted:delta=-5", head).act(h, step, tau_prev, rand)
    assert float(low.tau[up].min()) == pytest.approx(0.01)  # never 0 (that would be greedy)
    assert build_policy("shifted:delta=0.2", head).initial_tau == pytest.approx(1.2)


def test_ead_scaled_to_a_length_is_the_default_schedule_stretched():
    base, short = EADPolicy(), EADPolicy(length=64)
    t = torch.arange(0, 64)
    torch.testing.assert_close(short.schedule(t), base.schedule(t * 8))  # 512 / 64 = 8
    assert float(short.schedule(torch.tensor([63]))) == pytest.approx(0.1)  # at the floor by the end
    assert float(base.schedule(torch.tensor([12]))) > 0.5  # unscaled: still hot 12 tokens in
    assert "length=64" in short.spec and build_policy(short.spec).spec == short.spec
    with pytest.raises(ValueError, match="length"):
        EADPolicy(length=-1)


def test_fig4_pairs_tau_with_the_token_before_and_drops_rare_contexts():
    from introllm.training.plots import hot_contexts

    # a rare word drawn at a high tau: hot under the old pairing (the token drawn), not here
    traces = [{"tokens": ["The", " answer", " is", " zygote"], "tau": [0.7, 0.7, 0.7, 1.5]} for _ in range(3)]
    traces += [{"tokens": ["The", " answer", " is", " 4"], "tau": [0.7, 0.7, 0.7, 1.4]} for _ in range(3)]
    rows = hot_contexts(traces, min_count=5)
    assert rows[0][1] == "is"  # the hottest context
    by_token = {tok: (tau, n) for tau, tok, n in rows}
    assert "zygote" not in by_token and "4" not in by_token  # tokens drawn at tau are not their own context
    assert by_token["is"] == (pytest.approx(1.45), 6)  # the context where the head chose the high tau
    assert hot_contexts(traces, min_count=7) == []  # each context is seen 6 times


def test_eval_dtype_follows_the_dtype_a_checkpoint_was_trained_in(tmp_path):
    from introllm.training.evaluate import eval_dtype

    trained = tmp_path / "final"
    (trained / "trainer_state").mkdir(parents=True)
    (trained / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert eval_dtype(str(trained), "auto") == "float32"
    assert eval_dtype(str(trained), "bfloat16") == "bfloat16"  # asked for: as asked
    (trained / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert eval_dtype(str(trained), "auto") == "bfloat16"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert eval_dtype(str(plain), "auto") == "auto"  # not a training checkpoint: as serving
    assert eval_dtype("", "auto") == "auto"


def test_mean_matched_resolves_the_shift_from_a_learned_evaluation(tmp_path):
    from introllm.training.meanshift import mean_matched_policy

    records = tmp_path / "learned.jsonl"
    records.write_text("".join(json.dumps({"tau": t}) + "\n" for t in ([0.8, 1.0], [0.9])))
    summary = {
        "name": "x",
        "dataset": "d",
        "checkpoint": "embedded",
        "policy": "learned",
        "k": 1,
        "n": 1,
        "num_problems": 1,
        "avg_at_k": 0.0,
        "pass_at_k": 0.0,
        "mean_tokens": 1.0,
    }
    (tmp_path / "learned.summary.json").write_text(json.dumps(summary))
    spec, delta = mean_matched_policy(records, 0.3)
    assert spec == "shifted:delta=-0.6" and delta == pytest.approx(-0.6)
    with pytest.raises(ValueError, match="target tau > 0"):
        mean_matched_policy(records, 0.0)


def test_seed_intervals_and_per_seed_differences():
    from introllm.experiment.report import RowData, seed_differences
    from introllm.experiment.stats import seed_interval

    iv = seed_interval([0.2, 0.3, 0.25, 0.35, 0.3])
    assert iv.mean == pytest.approx(0.28) and iv.lo < 0.28 < iv.hi
    assert math.isnan(seed_interval([0.3]).lo)

    def row(per_seed):
        return RowData("r", list(per_seed), [], {}, {s: (v, v) for s, v in per_seed.items()}, None, [], 8, 8)

    a, b, one = row({0: 0.3, 1: 0.4, 2: 0.5}), row({0: 0.2, 1: 0.2, 2: 0.6}), row({0: 0.25})
    diffs, paired = seed_differences(a, b, 0)
    assert paired and diffs == pytest.approx([0.1, 0.2, -0.1])
    diffs, paired = seed_differences(a, one, 0)  # a fixed row evaluated once: each seed against it
    assert not paired and diffs == pytest.approx([0.05, 0.15, 0.25])


def test_the_changed_modules_doctests_hold():
    import doctest

    import introllm.clients.loadtest
    import introllm.experiment.stats
    import introllm.sampler.policies
    import introllm.sampler.sampling
    import introllm.training.plots
    import introllm.training.rollout

    for module in (
        introllm.sampler.policies,
        introllm.sampler.sampling,
        introllm.training.rollout,
        introllm.training.plots,
        introllm.experiment.stats,
        introllm.clients.loadtest,
    ):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__
