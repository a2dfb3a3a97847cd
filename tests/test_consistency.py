"""The invariant the trainer rests on: what a fresh full-sequence forward computes for a recorded
action equals what the sampler recorded when it took it (fp32, atol 1e-5), padded batches included."""

import pytest
import torch
from conftest import random_head

from introllm.sampler import Engine, SamplingParams
from introllm.sampler.head import z_to_tau
from introllm.sampler.scoring import collate, completion_hidden, completion_logprobs

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20], [30, 31, 32, 33, 34]]
POLICIES = ["learned", "always-update", "prompt-level", "fixed:0.8", "greedy", "ead", "ead-exp", "tampo"]


@pytest.mark.parametrize("policy", POLICIES)
def test_recorded_logprobs_equal_recomputed(model, policy):
    head = random_head(model.config.hidden_size)
    engine = Engine(model, head)
    # Stop tokens make completions end at different lengths, so the batch is padded on both sides.
    params = SamplingParams(max_new_tokens=24, seed=7, policy=policy, stop_token_ids=(40, 41, 42, 43))
    seqs = [s for group in engine.generate(PROMPTS, params, n=3) for s in group]
    lengths = {len(s.token_ids) for s in seqs}
    assert len(lengths) > 1 and len({len(s.prompt_ids) for s in seqs}) > 1

    batch = collate(seqs)
    with torch.no_grad():
        h = completion_hidden(model, batch)
        logp, entropy = completion_logprobs(model, h, batch, chunk=5, with_entropy=True)
    m = batch.mask.bool()
    torch.testing.assert_close(logp[m], batch.old_logp[m], atol=1e-5, rtol=0)
    recorded_entropy = torch.tensor([e for s in seqs for e in s.trace.entropy])
    torch.testing.assert_close(entropy[m], recorded_entropy, atol=1e-4, rtol=1e-5)

    pol = engine.policy(policy)
    if pol.uses_head:
        with torch.no_grad():
            temp_logp = pol.log_prob(head(h), batch.updated, batch.z)
        torch.testing.assert_close(temp_logp[m], batch.old_temp_logp[m], atol=1e-5, rtol=0)
        upd = batch.updated & m
        torch.testing.assert_close(batch.tau[upd], z_to_tau(batch.z[upd], pol.tau_min, pol.tau_max))
    elif policy != "tampo":
        assert (batch.old_temp_logp == 0).all()


def test_recomputation_has_gradients_for_model_and_head(llama):
    head = random_head(48)
    engine = Engine(llama, head)
    seqs = [s for g in engine.generate(PROMPTS, SamplingParams(max_new_tokens=6, seed=1), n=2) for s in g]
    batch = collate(seqs)
    h = completion_hidden(llama, batch)
    logp, _ = completion_logprobs(llama, h, batch, chunk=4)
    (logp * batch.mask).sum().backward()
    assert llama.lm_head.weight.grad is not None and llama.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    temp = engine.policy("learned").log_prob(head(h.detach()), batch.updated, batch.z)
    (temp * batch.mask).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
