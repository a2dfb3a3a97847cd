"""Steps A and B on a tiny random model: gradients against a naive per-sequence reference,
gradient accumulation, masking, and which parameters each step touches."""

import math

import pytest
import torch
from conftest import random_head, tiny_llama

from introllm.sampler import Engine, SamplingParams, build_policy
from introllm.sampler.scoring import collate, completion_hidden, token_logprobs
from introllm.training.config import OptimConfig
from introllm.training.losses import group_advantages
from introllm.training.update import PolicyScorer, tau_likelihoods, update

G = 4


class Capture:
    """An 'optimizer' that records the gradients it is asked to apply."""

    def __init__(self, params):
        self.params, self.grads = list(params), None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.clone() for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


@pytest.fixture
def rollout():
    model, head = tiny_llama(), random_head(48, scale=0.3)
    engine = Engine(model, head)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14]]
    groups = engine.generate(prompts, SamplingParams(max_new_tokens=10, policy="learned", seed=7), n=G)
    seqs = [s for g in groups for s in g]
    rewards = torch.tensor([float(i % 3 == 0) for i in range(len(seqs))])
    return model, head, seqs, group_advantages(rewards, G)


def naive_objective(model, head, seqs, adv):
    """-(1/N) sum_i A_i sum_t [log pi_theta(y_t | tau_t) + log pi_phi(c_t, z_t)], one sequence at a time."""
    policy = build_policy("learned", head)
    total = 0.0
    for s, a in zip(seqs, adv):
        ids = torch.tensor([s.prompt_ids + s.token_ids])
        h = model.model(input_ids=ids).last_hidden_state[0]
        p = len(s.prompt_ids)
        h_pred = h[p - 1 : p - 1 + len(s.token_ids)]
        logp = token_logprobs(model.lm_head(h_pred), torch.tensor(s.token_ids), torch.tensor(s.trace.tau))
        temp = policy.log_prob(head(h_pred.detach()), torch.tensor(s.trace.updated), torch.tensor(s.trace.z))
        total = total + a * (logp.sum() + temp.sum())
    return -total / len(seqs)


def run_update(model, head, seqs, adv, clip_eps=0.2, **kw):
    opts = {"optimizer_model": Capture(model.parameters()), "optimizer_head": Capture(head.parameters())}
    model.train()
    stats = update(
        PolicyScorer(model, head),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers=opts,
        pad_id=0,
        optim=OptimConfig(clip_eps=clip_eps, max_grad_norm=0.0, **kw),
    )
    return stats, opts["optimizer_model"].grads, opts["optimizer_head"].grads


def test_first_step_gradient_is_the_policy_gradient(rollout):
    model, head, seqs, adv = rollout
    stats, g_model, g_head = run_update(model, head, seqs, adv, micro_batch_size=len(seqs))
    assert stats.clip_frac == 0 and stats.clip_frac_temp == 0  # ratio exactly 1: nothing clipped
    assert stats.logp_mismatch < 1e-4  # the trainer scores what the sampler recorded
    model.zero_grad(), head.zero_grad()
    naive_objective(model, head, seqs, adv).backward()
    for p, g in zip(model.parameters(), g_model):
        assert torch.allclose(g, p.grad, atol=1e-6, rtol=1e-4)
    for p, g in zip(head.parameters(), g_head):
        assert torch.allclose(g, p.grad, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in g_head) and any(g.abs().sum() > 0 for g in g_model)


def test_importance_ratio_is_exactly_one_on_the_first_inner_step_only(rollout):
    model, head, seqs, adv = rollout
    # with a clip range of 1e-9, any ratio other than exactly 1 would be clipped somewhere
    stats, _, _ = run_update(model, head, seqs, adv, clip_eps=1e-9, micro_batch_size=5)
    assert stats.clip_frac == 0 and stats.clip_frac_temp == 0
    # a second inner step after a real optimizer step sees ratios != 1: the check can fail
    opts = {
        "optimizer_model": torch.optim.AdamW(model.parameters(), lr=1e-2),
        "optimizer_head": torch.optim.AdamW(head.parameters(), lr=1e-2),
    }
    stats = update(
        PolicyScorer(model, head),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers=opts,
        pad_id=0,
        optim=OptimConfig(clip_eps=1e-9, max_grad_norm=0.0, micro_batch_size=5, ppo_epochs=2),
    )
    assert stats.clip_frac > 0.2 and stats.clip_frac_temp > 0.2


def test_gradient_accumulation_gives_the_full_batch_gradient(rollout):
    model, head, seqs, adv = rollout
    _, full_m, full_h = run_update(model, head, seqs, adv, micro_batch_size=len(seqs))
    _, acc_m, acc_h = run_update(model, head, seqs, adv, micro_batch_size=3)
    for a, b in zip(full_m + full_h, acc_m + acc_h):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_a_fully_masked_batch_changes_nothing(rollout):
    model, head, seqs, adv = rollout
    for s in seqs:
        s.finish_reason = "length"  # every completion truncated, and truncated ones are masked
    before = [p.detach().clone() for p in list(model.parameters()) + list(head.parameters())]
    opts = {
        "optimizer_model": torch.optim.AdamW(model.parameters(), lr=1e-2),
        "optimizer_head": torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.1),
    }
    stats = update(
        PolicyScorer(model, head),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers=opts,
        pad_id=0,
        optim=OptimConfig(clip_eps=0.2, max_grad_norm=1.0, micro_batch_size=4, mask_truncated=True),
    )
    assert stats.skipped
    after = list(model.parameters()) + list(head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(not opt.state for opt in opts.values())


def test_adamw_steps_change_every_trainable_parameter_and_no_frozen_one(rollout):
    model, head, seqs, adv = rollout
    model.model.layers[0].requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = {id(p) for p in model.model.layers[0].parameters()}
    before = {id(p): p.detach().clone() for p in list(model.parameters()) + list(head.parameters())}
    opts = {
        "optimizer_model": torch.optim.AdamW(trainable, lr=1e-3),
        "optimizer_head": torch.optim.AdamW(head.parameters(), lr=1e-3),
    }
    model.train()
    for _ in range(2):
        stats = update(
            PolicyScorer(model, head),
            model,
            head,
            build_policy("learned", head),
            seqs,
            adv,
            optimizers=opts,
            pad_id=0,
            optim=OptimConfig(clip_eps=0.2, max_grad_norm=1.0, micro_batch_size=5),
        )
        assert torch.isfinite(
            torch.tensor([stats.loss_token, stats.loss_temp, stats.grad_norm_model, stats.grad_norm_head])
        ).all()
    for name, p in list(model.named_parameters()) + list(head.named_parameters()):
        changed = not torch.equal(before[id(p)], p)
        assert changed == (id(p) not in frozen), name


def test_head_only_and_model_only_steps_touch_only_their_parameters(rollout):
    model, head, seqs, adv = rollout
    snapshot = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    same = lambda m, s: all(torch.equal(a, b) for a, b in zip(m.parameters(), s))  # noqa: E731
    # step B only: the model frozen (model_lr = 0), the head learns
    model.requires_grad_(False)
    m0, h0 = snapshot(model), snapshot(head)
    update(
        PolicyScorer(model, head),
        model,
        head,
        build_policy("learned", head),
        seqs,
        adv,
        optimizers={"optimizer_head": torch.optim.AdamW(head.parameters(), lr=1e-3)},
        pad_id=0,
        optim=OptimConfig(clip_eps=0.2, max_grad_norm=1.0, micro_batch_size=6),
    )
    assert same(model, m0) and not same(head, h0)
    # step A only: no head (a fixed-temperature method), the model learns
    model.requires_grad_(True)
    m0, h0 = snapshot(model), snapshot(head)
    update(
        PolicyScorer(model, None),
        model,
        None,
        None,
        seqs,
        adv,
        optimizers={"optimizer_model": torch.optim.AdamW(model.parameters(), lr=1e-3)},
        pad_id=0,
        optim=OptimConfig(clip_eps=0.2, max_grad_norm=1.0, micro_batch_size=6),
    )
    assert not same(model, m0) and same(head, h0)


def test_tau_likelihoods_match_a_naive_loop(rollout):
    model, head, seqs, adv = rollout
    batch = collate(seqs, pad_id=0)
    with torch.no_grad():
        got = tau_likelihoods(model, completion_hidden(model, batch), batch, temperatures=(0.6, 1.0, 1.5), chunk=4)
        for i, s in enumerate(seqs):
            ids = torch.tensor([s.prompt_ids + s.token_ids])
            logits = model(input_ids=ids).logits[0, len(s.prompt_ids) - 1 : -1]
            for k, tau in enumerate((0.6, 1.0, 1.5)):
                expect = token_logprobs(logits, torch.tensor(s.token_ids), torch.full((len(s.token_ids),), tau)).mean()
                assert abs(float(got[i, k]) - float(expect)) < 1e-5


def test_step_overhead_benchmark_pairs_equal_work():
    from introllm.benchmarks.train_step import train_step_overhead

    model, head = tiny_llama(), random_head(48, scale=0.3)
    result = train_step_overhead(
        model, head, [[5, 6, 7], [8, 9]], group_size=2, new_tokens=4, repeats=2, micro_batch_size=2
    )
    assert len(result["raw"]["introllm"]["step"]) == len(result["raw"]["grpo"]["step"]) == 2
    assert result["step_overhead"] > -1 and result["median_step_seconds"]["grpo"] > 0


def test_rollout_logp_gap_is_measured_and_corrects_the_loss(rollout):
    """A rollout engine that reported other log-probs (vLLM at another precision, say): the gap is
    logged, and the loss terms are weighted by min(pi_train / pi_rollout, tis_cap)."""
    import copy

    model, head, seqs, adv = rollout
    _, g_exact, _ = run_update(model, head, seqs, adv, micro_batch_size=len(seqs))
    shifted = copy.deepcopy(seqs)
    for s in shifted:  # the rollout engine reported each token 0.3 nats less likely: ratio e^0.3
        s.trace.logp = [lp - 0.3 for lp in s.trace.logp]
    model.zero_grad(), head.zero_grad()
    stats, g_tis, _ = run_update(model, head, shifted, adv, micro_batch_size=len(seqs), tis_cap=2.0)
    assert stats.logp_mismatch == pytest.approx(0.3, abs=1e-4)
    assert stats.logp_mismatch_mean == pytest.approx(0.3, abs=1e-4) and stats.logp_mismatch_frac == 1.0
    assert stats.tis_weight_mean == pytest.approx(math.exp(0.3), rel=1e-4) and stats.tis_capped_frac == 0.0
    for a, b in zip(g_exact, g_tis):  # every token weighted by e^0.3: the gradient scales by it
        assert torch.allclose(b, a * math.exp(0.3), atol=1e-6, rtol=1e-4)
    model.zero_grad(), head.zero_grad()
    stats, g_capped, _ = run_update(model, head, shifted, adv, micro_batch_size=len(seqs), tis_cap=1.1)
    assert stats.tis_capped_frac == 1.0
    for a, b in zip(g_exact, g_capped):
        assert torch.allclose(b, a * 1.1, atol=1e-6, rtol=1e-4)
    model.zero_grad(), head.zero_grad()
    stats, g_off, _ = run_update(model, head, shifted, adv, micro_batch_size=len(seqs), tis_cap=0.0)
    for a, b in zip(g_exact, g_off):  # off: the gap is still logged, the loss is not corrected
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert stats.logp_mismatch_frac == 1.0


def test_nan_entropies_of_a_trace_come_from_the_trainers_recompute_without_touching_the_trace(rollout):
    import copy
    import math

    model, head, seqs, adv = rollout
    blank = copy.deepcopy(seqs)
    for s in blank:
        s.trace.entropy = [float("nan")] * len(s.token_ids)
    stats = run_update(model, head, blank, adv, micro_batch_size=4)[0]
    # the torch engine's own entropies, under the same tau, summed per sequence
    assert stats.entropy_sum.tolist() == pytest.approx([sum(s.trace.entropy) for s in seqs], abs=1e-3)
    assert all(math.isnan(e) for s in blank for e in s.trace.entropy)  # nothing written back
