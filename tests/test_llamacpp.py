"""The llama.cpp backend (sampler/llamacpp_engine.py) on the embedded model's GGUF as shipped:
its h against the Hugging Face forward, greedy completions against the torch engine, seeds,
samples sharing a prefill, continuous batching with freed KV cells, the prefix cache, heads that do not fit, the
CLI. Needs llama-cpp-python (``make install-llamacpp``; CI builds it)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp", reason="the llama.cpp backend's tests need llama-cpp-python (make install-llamacpp)")

from introllm.sampler import Engine, SamplingParams  # noqa: E402
from introllm.sampler.records import PromptRow  # noqa: E402
from introllm.sampler.text import prompt_ids  # noqa: E402

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "What is 7 * 8?", "Name three colours."]


@pytest.fixture(scope="module")
def llama(embedded):
    from introllm.sampler.llamacpp_engine import LlamaCppEngine
    from introllm.sampler.models import embedded_gguf

    engine = LlamaCppEngine(embedded_gguf(), embedded.head, max_batch=8, context=512, threads=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(embedded):
    return [prompt_ids(embedded.tokenizer, q, chat=True) for q in QUESTIONS]


def test_h_is_the_final_norm_hidden_state_of_the_hugging_face_forward(llama, embedded, prompts):
    """Bound: per position cosine >= 0.995 and relative L2 error <= 0.10 against the HF forward on the
    same (dequantised) weights; llama.cpp quantises activations to 8 bits for its Q4_1 matmuls."""
    for ids in prompts:
        _, h = llama.score(ids[:1], ids[1:])  # every position of the prompt but the first
        with torch.no_grad():
            ref = embedded.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, :-1]
        cos = torch.nn.functional.cosine_similarity(h, ref, dim=-1)
        rel = (h - ref).norm(dim=-1) / ref.norm(dim=-1)
        assert float(cos.min()) >= 0.995 and float(rel.max()) <= 0.10, (float(cos.min()), float(rel.max()))


def test_greedy_equals_the_torch_engine_or_differs_at_a_near_tie(llama, embedded, prompts):
    """Where the tokens part, the two best logits of the HF model are within 0.5 and llama.cpp chose
    one of them: a near-tie that 8-bit activations can flip, not a different model."""
    params = SamplingParams(max_new_tokens=32, policy="greedy")
    ours = llama.generate(prompts, params)
    ref = Engine(embedded.model, embedded.head).generate(prompts, params)
    for ids, (a,), (b,) in zip(prompts, ours, ref):
        if a.token_ids == b.token_ids:
            continue
        t = next(i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y)
        with torch.no_grad():
            logits = embedded.model(torch.tensor([ids + b.token_ids[:t]])).logits[0, -1]
        top2 = logits.topk(2)
        assert float(top2.values[0] - top2.values[1]) < 0.5, (t, top2)
        assert a.token_ids[t] in top2.indices.tolist()


def test_seeds_reproduce_and_samples_share_a_prefill(llama, prompts):
    p = SamplingParams(max_new_tokens=16, seed=4, ignore_eos=True)
    a, b = llama.generate(prompts, p, n=2), llama.generate(prompts, p, n=2)
    assert [[s.token_ids for s in g] for g in a] == [[s.token_ids for s in g] for g in b]
    assert [[s.trace.tau for s in g] for g in a] == [[s.trace.tau for s in g] for g in b]
    assert a[0][0].token_ids != a[0][1].token_ids  # the samples differ
    # sample 1 of a prompt read once and copied equals that sample decoded from its own prefill
    batch = llama.new_batch()
    (alone,) = batch.add([PromptRow(prompts[0], p, 1, 0, 1)])[0]
    while batch.num_running:
        batch.step()
    assert alone.token_ids == a[0][1].token_ids
    for s in (x for g in a for x in g):
        assert len(s.trace.tau) == len(s.token_ids) == 16
        lo, hi = llama.head.config.tau_min, llama.head.config.tau_max  # the served head's range
        assert all(lo <= t <= hi for t in s.trace.tau) and all(lp <= 0 for lp in s.trace.logp)


def test_continuous_batching_frees_the_cells_of_leaving_sequences(llama, prompts):
    p = SamplingParams(max_new_tokens=10, seed=2, ignore_eos=True)
    reference = llama.generate(prompts, p)
    batch = llama.new_batch()
    (first,) = batch.add([PromptRow(prompts[0], p, 1, 0, 0)])[0]
    for _ in range(3):
        batch.step()
    (victim,) = batch.add([PromptRow(prompts[1], p, 1, 1, 1)])[0]
    batch.step()
    batch.cancel([victim])
    assert victim.finish_reason == "cancelled"
    (late,) = batch.add([PromptRow(prompts[2], p, 1, 2, 2)])[0]  # may take the freed slot
    while batch.num_running:
        batch.step()
    assert first.token_ids == reference[0][0].token_ids and late.token_ids == reference[2][0].token_ids
    _assert_idle(llama)
    with pytest.raises(ValueError, match="do not fit"):
        llama.new_batch().add([PromptRow(prompts[0], p, llama.max_batch + 1)])
    _assert_idle(llama)
    llama.drop_prefix_cache()
    assert sorted(llama._free) == list(range(llama.max_batch)) and not llama._cached
    assert all(llama.L.llama_memory_seq_pos_max(llama._mem, s) == -1 for s in range(llama.max_batch))


def _assert_idle(engine):
    """Every slot is idle: free with no cells, or cached with exactly the cells of its tokens."""
    L, mem = engine.L, engine._mem
    assert sorted(engine._free + list(engine._cached)) == list(range(engine.max_batch))
    assert all(L.llama_memory_seq_pos_max(mem, s) == -1 for s in engine._free)
    assert all(L.llama_memory_seq_pos_max(mem, s) == len(t) - 1 for s, t in engine._cached.items())


def test_prefix_cache_skips_the_shared_prefill(llama, embedded, prompts):
    """A repeated prompt reads only its last token, with the same tokens as before (its cells came
    from the same prefill). A chat's next turn (prompt + answer + more) reads only what is new; its
    answer's cells were computed one token at a time, not as a prefill, which llama.cpp rounds
    differently (llama-server's cache_prompt says the same), so its first decision's logits are
    compared with the Hugging Face forward on the same weights: the cached path must be as close to
    it as a prefill from scratch is (within 1.5x: both carry llama.cpp's 8-bit activation rounding,
    about 0.7 logit here, in different directions), with the same best token."""
    p = SamplingParams(max_new_tokens=12, seed=5, ignore_eos=True)
    llama.drop_prefix_cache()
    ((fresh,),) = llama.generate(prompts[:1], p)
    before = llama.reused_tokens
    ((again,),) = llama.generate(prompts[:1], p)
    assert llama.reused_tokens - before == len(prompts[0]) - 1
    assert again.token_ids == fresh.token_ids and again.trace.tau == fresh.trace.tau
    turn = list(prompts[0]) + fresh.token_ids + list(prompts[1][1:])

    def first_logits():
        batch = llama.new_batch()
        batch.add([PromptRow(turn, p)])
        assert batch.state["slot"].tolist() == [0]  # alone in the batch: the slot holding its prefix (0)
        logits = batch.logits[0].clone()
        batch.close()
        return logits

    before = llama.reused_tokens
    cached = first_logits()
    assert llama.reused_tokens - before == len(prompts[0]) + len(fresh.token_ids) - 1
    llama.drop_prefix_cache()
    llama.prefix_cache = False
    try:
        scratch = first_logits()
    finally:
        llama.prefix_cache = True
    with torch.no_grad():
        hf = embedded.model(torch.tensor([turn])).logits[0, -1]
    err_cached, err_scratch = (float((x - hf).abs().max()) for x in (cached, scratch))
    assert err_cached <= 1.5 * err_scratch, (err_cached, err_scratch)
    assert int(cached.argmax()) == int(scratch.argmax())
    _assert_idle(llama)


def test_prompts_of_one_prefill_that_start_alike_are_read_once(llama, prompts):
    """Two clients with the same prompt and a third with the same system prompt, admitted together:
    the duplicate reads nothing, the third only what follows the shared part, and each decodes
    exactly as it does when read alone."""
    from introllm.sampler.llamacpp_engine import _common_prefix

    p = SamplingParams(max_new_tokens=8, seed=3, ignore_eos=True)
    rows = [PromptRow(prompts[0], p, 1, 0, 0), PromptRow(prompts[0], p, 1, 1, 0), PromptRow(prompts[1], p, 1, 2, 0)]
    shared = _common_prefix(np.asarray(prompts[0][:-1]), np.asarray(prompts[1][:-1]))
    assert shared >= 8  # the chat template's system prompt

    def decode(group):
        batch = llama.new_batch()
        seqs = [g[0] for g in batch.add(group)]
        while batch.num_running:
            batch.step()
        return [s.token_ids for s in seqs]

    llama.drop_prefix_cache()
    llama.prefix_cache = False  # the reference reads every prompt from scratch
    try:
        alone = [decode([row])[0] for row in rows]
        before = llama.reused_tokens
        together = decode(rows)
    finally:
        llama.prefix_cache = True
    assert llama.reused_tokens - before == (len(prompts[0]) - 1) + shared
    assert together == alone
    _assert_idle(llama)


def test_heads_that_do_not_fit_are_refused_and_a_bare_gguf_needs_a_head(tmp_path):
    import types

    from introllm.sampler.checkpoint import CheckpointError, save_head
    from introllm.sampler.head import HeadConfig, TemperatureHead
    from introllm.sampler.llamacpp_engine import load_llamacpp
    from introllm.sampler.models import embedded_gguf

    shape = types.SimpleNamespace(model_type="llama", hidden_size=64, num_hidden_layers=2, vocab_size=100)
    save_head(tmp_path / "h64", TemperatureHead(HeadConfig(64)), shape)
    with pytest.raises(CheckpointError, match="hidden size 64"):
        load_llamacpp(None, str(tmp_path / "h64"), max_batch=1, context=256)
    with pytest.raises(ValueError, match="carries no temperature head"):
        load_llamacpp(str(embedded_gguf()), None, max_batch=1, context=256)
    with pytest.raises(ValueError, match="reads a .gguf file"):
        load_llamacpp(str(tmp_path), "init", max_batch=1, context=256)
    engine, tokenizer, _ = load_llamacpp(str(embedded_gguf()), "init", max_batch=1, context=256)
    assert engine.head.config.hidden_size == 576 and tokenizer("hi")["input_ids"]
    engine.close()


def test_generate_and_eval_run_on_the_llamacpp_backend(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "introllm",
            "-q",
            "generate",
            "What is 2 + 2?",
            "--backend",
            "llamacpp",
            "--seed",
            "1",
            "--max-new-tokens",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (sample,) = json.loads(out.stdout)
    trace = sample["temperature_trace"]
    assert len(trace["token_ids"]) == len(trace["temperatures"]) == len(trace["logprobs"]) > 0
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(3))
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "introllm",
            "-q",
            "eval",
            "--backend",
            "llamacpp",
            "--dataset",
            str(data),
            "--k",
            "2",
            "--max-new-tokens",
            "16",
            "--output",
            str(tmp_path / "r.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["num_problems"] == 3 and summary["n"] == 2
