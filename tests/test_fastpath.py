"""The fused decode step computes what the model's own forward computes."""

import pytest
import torch
from conftest import random_head, tiny_llama, tiny_qwen3
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from introllm.sampler import Engine, SamplingParams
from introllm.sampler.fastpath import unsupported_reason

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20]]
SMALL = dict(
    vocab_size=101,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    eos_token_id=3,
    pad_token_id=0,
)


def _models():
    torch.manual_seed(0)
    yield "llama", tiny_llama()
    yield "llama+bias", tiny_llama(attention_bias=True, mlp_bias=True)
    yield "qwen3", tiny_qwen3()
    yield "qwen2", Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()  # q/k/v biases, no o bias
    yield "mistral", MistralForCausalLM(MistralConfig(**SMALL, sliding_window=None)).eval()


@pytest.mark.parametrize("name, model", list(_models()), ids=lambda x: x if isinstance(x, str) else "")
@pytest.mark.parametrize("packed", [True, False])
def test_fused_decode_matches_model_forward(name, model, packed):
    assert unsupported_reason(model) is None
    head = random_head(model.config.hidden_size)
    fused = Engine(model, head, fast_cpu_kernels=packed)
    plain = Engine(model, head, fused_decode=False, fast_cpu_kernels=False)
    assert fused.fused is not None and plain.fused is None
    for policy in ("greedy", "learned"):
        params = SamplingParams(max_new_tokens=12, seed=1, policy=policy, ignore_eos=True)
        a = [s for g in fused.generate(PROMPTS, params, n=2) for s in g]
        b = [s for g in plain.generate(PROMPTS, params, n=2) for s in g]
        assert [s.token_ids for s in a] == [s.token_ids for s in b]
        for x, y in zip(a, b):
            torch.testing.assert_close(torch.tensor(x.trace.logp), torch.tensor(y.trace.logp), atol=1e-5, rtol=0)
            torch.testing.assert_close(torch.tensor(x.trace.tau), torch.tensor(y.trace.tau), atol=1e-5, rtol=0)


def test_fused_weights_follow_training_updates():
    model = tiny_llama()
    engine = Engine(model, random_head(48))
    params = SamplingParams(max_new_tokens=8, policy="greedy", ignore_eos=True)
    before = engine.generate(PROMPTS, params)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # in place, as an optimizer step
    after = engine.generate(PROMPTS, params)
    reference = Engine(model, random_head(48), fused_decode=False).generate(PROMPTS, params)
    assert [g[0].token_ids for g in after] == [g[0].token_ids for g in reference]
    assert [g[0].token_ids for g in after] != [g[0].token_ids for g in before]


def test_other_models_fall_back():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    assert "gpt2" in unsupported_reason(model)
    engine = Engine(model)
    assert engine.fused is None
    ((seq,),) = engine.generate([[5, 6, 7]], SamplingParams(max_new_tokens=5, policy="greedy", ignore_eos=True))
    with torch.no_grad():
        logits = model(torch.tensor([[5, 6, 7] + seq.token_ids])).logits[0, 2:-1]
    assert logits.argmax(-1).tolist() == seq.token_ids
