"""The compiled decode step (sampler/compiled.py) against the eager engine, float32 on CPU:
identical tokens and traces (up to float rounding in tau), the trainer's recompute of the
recorded log-probs, continuous batching with requests joining and leaving, the eager fallbacks
(filtering, other policies), and the static cache's limits. Tiny random models built from a
config: each test compiles its few graphs in seconds."""

import pytest
import torch
from conftest import random_head, tiny_llama, tiny_qwen3

from introllm.sampler import Engine, SamplingParams
from introllm.sampler.compiled import CompileConfig, CompiledBatch
from introllm.sampler.records import PromptRow
from introllm.sampler.scoring import collate, completion_hidden, completion_logprobs

pytestmark = pytest.mark.slow  # torch.compile: tens of seconds per test on two cores

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20]]
CFG = CompileConfig(max_len=96, max_slots=8, batch_buckets=(1, 4, 8), len_buckets=(48, 96))


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def engines(request):
    model = tiny_llama() if request.param == "llama" else tiny_qwen3()
    head = random_head(model.config.hidden_size, seed=2)
    return Engine(model, head), Engine(model, head, compile=CFG)


def _same(a, b, tau_atol=1e-5):
    assert a.token_ids == b.token_ids
    assert a.trace.updated == b.trace.updated
    torch.testing.assert_close(torch.tensor(b.trace.tau), torch.tensor(a.trace.tau), atol=tau_atol, rtol=0)
    torch.testing.assert_close(torch.tensor(b.trace.logp), torch.tensor(a.trace.logp), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(b.trace.temp_logp), torch.tensor(a.trace.temp_logp), atol=1e-3, rtol=1e-4)


def test_compiled_decodes_the_same_tokens_and_traces_as_eager(engines):
    eager, compiled = engines
    assert isinstance(compiled.new_batch(), CompiledBatch)
    params = SamplingParams(max_new_tokens=32, seed=7, ignore_eos=True)  # the learned policy
    a, b = eager.generate(PROMPTS, params, n=2), compiled.generate(PROMPTS, params, n=2)
    for ga, gb in zip(a, b):
        for sa, sb in zip(ga, gb):
            assert len(sb.token_ids) == 32
            _same(sa, sb)
    assert compiled.compiled.compile_seconds > 0


def test_recorded_logprobs_equal_the_trainers_recompute(engines):
    eager, compiled = engines
    model, head = eager.model, eager.head
    seqs = [s for g in compiled.generate(PROMPTS, SamplingParams(max_new_tokens=20, seed=3), n=2) for s in g]
    batch = collate(seqs)
    with torch.no_grad():
        h = completion_hidden(model, batch)
        logp, _ = completion_logprobs(model, h, batch)
        temp = compiled.policy("learned").log_prob(head(h), batch.updated, batch.z)
    m = batch.mask.bool()
    torch.testing.assert_close(logp[m], batch.old_logp[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(temp[m], batch.old_temp_logp[m], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("policy", ["greedy", "fixed:0.7", "ead", "always-update", "tampo"])
def test_other_policies_act_eagerly_and_agree(engines, policy):
    eager, compiled = engines
    params = SamplingParams(max_new_tokens=16, seed=5, policy=policy, ignore_eos=True)
    for ga, gb in zip(eager.generate(PROMPTS, params), compiled.generate(PROMPTS, params)):
        _same(ga[0], gb[0])


def test_filtering_and_top_logprobs_fall_back_to_eager_sampling(engines):
    eager, compiled = engines
    params = SamplingParams(max_new_tokens=12, seed=9, top_k=5, top_p=0.9, logprobs=3, ignore_eos=True)
    for ga, gb in zip(eager.generate(PROMPTS, params), compiled.generate(PROMPTS, params)):
        _same(ga[0], gb[0])
        assert gb[0].trace.top_logprobs and len(gb[0].trace.top_logprobs[0]) == 3


def test_continuous_batching_under_compile_keeps_every_sequences_tokens(engines):
    eager, compiled = engines
    params = SamplingParams(max_new_tokens=12, seed=3, ignore_eos=True)
    reference = eager.generate(PROMPTS, params)
    batch = compiled.new_batch()
    (first,) = batch.add([PromptRow(PROMPTS[0], params, 1, 0, 0)])[0]
    for _ in range(4):
        batch.step()
    later = batch.add([PromptRow(PROMPTS[i], params, 1, i, i) for i in (1, 2)])  # joins a running batch
    batch.step()
    victim = later[0][0]
    batch.cancel([victim])  # leaves: its slot is free again
    assert victim.finish_reason == "cancelled"
    (again,) = batch.add([PromptRow(PROMPTS[1], params, 1, 1, 1)])[0]  # takes the freed slot
    while batch.num_running:
        batch.step()
    assert first.token_ids == reference[0][0].token_ids
    assert later[1][0].token_ids == reference[2][0].token_ids
    assert again.token_ids == reference[1][0].token_ids


def test_static_cache_limits_are_errors_that_say_so():
    model = tiny_llama()
    engine = Engine(model, random_head(48), compile=CompileConfig(max_len=16, max_slots=2, batch_buckets=(1, 2)))
    assert engine.max_context == 16
    batch = engine.new_batch()
    with pytest.raises(ValueError, match="do not fit"):
        batch.add([PromptRow([5, 6], SamplingParams(max_new_tokens=4), 3)])
    ((seq,),) = engine.generate([[5] * 10], SamplingParams(max_new_tokens=50, seed=0, ignore_eos=True))
    assert len(seq.token_ids) == 6 and seq.finish_reason == "length"  # the compiled context ends at 16
    with pytest.raises(ValueError, match="context"):
        engine.generate([[5] * 16], SamplingParams(max_new_tokens=2))


def test_config_buckets_cover_the_slots_and_lengths():
    cfg = CompileConfig(max_len=3000, max_slots=48)
    assert cfg.batch_buckets[-1] == 48 and cfg.batch_bucket(33) == 48 and cfg.batch_bucket(1) == 1
    assert cfg.len_buckets[0] == 256 and cfg.len_buckets[-1] == 3000 and cfg.len_bucket(257) == 512
    with pytest.raises(ValueError):
        CompileConfig(max_len=1)


def test_models_outside_the_llama_family_are_refused_with_the_reason():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).eval()
    with pytest.raises(NotImplementedError, match="Llama-family"):
        Engine(model, None, compile=CompileConfig(max_len=32, max_slots=1))


def test_the_server_decodes_through_the_compiled_step(tiny_ckpt, caplog):
    """`introllm serve --compile`: the same tokens and temperatures as the eager server for a seeded
    request, and the compiled step is what ran (its compilation is logged)."""
    import logging

    import httpx
    from conftest import live_server

    from introllm.sampler.models import load_model
    from introllm.server.config import ServerConfig

    ck = load_model(str(tiny_ckpt), device="cpu", dtype="float32")
    traces = {}
    for compile in (False, True):
        with caplog.at_level(logging.INFO, logger="introllm"):
            config = ServerConfig(compile=compile, max_batch=2, max_model_len=64)
            with live_server(config, checkpoint=ck) as url:
                model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
                body = {"model": model, "prompt": "Hi there", "max_tokens": 8, "seed": 3, "ignore_eos": True}
                r = httpx.post(url + "/v1/completions", json=body, timeout=900)
                assert r.status_code == 200, r.text
                traces[compile] = r.json()["choices"][0]["temperature_trace"]
    assert traces[True]["token_ids"] == traces[False]["token_ids"]
    assert traces[True]["temperatures"] == pytest.approx(traces[False]["temperatures"], abs=1e-5)
    assert traces[True]["updated"] == traces[False]["updated"]
    assert any("compil" in r.getMessage() for r in caplog.records if r.name.startswith("introllm.sampler"))
