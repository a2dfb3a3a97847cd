import pytest
import torch
from conftest import EOS, VOCAB, random_head, tiny_llama

from introllm.sampler import Engine, SamplingParams, sample_tokens
from introllm.sampler.records import PromptRow, prompt_rows
from introllm.sampler.sampling import filter_logits

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20], [30, 31, 32, 33, 34]]


def _engine(model, **kw):
    return Engine(model, random_head(model.config.hidden_size), **kw)


def _tokens(seqs):
    return [[s.token_ids for s in group] for group in seqs]


def test_same_seed_same_tokens_and_seeds_matter(model):
    e = _engine(model)
    p = SamplingParams(max_new_tokens=12, seed=11)
    a, b = e.generate(PROMPTS, p, n=2), e.generate(PROMPTS, p, n=2)
    assert _tokens(a) == _tokens(b)
    assert [s.trace.tau for g in a for s in g] == [s.trace.tau for g in b for s in g]
    c = e.generate(PROMPTS, SamplingParams(max_new_tokens=12, seed=12), n=2)
    assert _tokens(a) != _tokens(c)
    assert a[0][0].token_ids != a[0][1].token_ids  # the n samples differ


def test_greedy_is_argmax_of_full_forward(model):
    e = _engine(model)
    seqs = e.generate(PROMPTS, SamplingParams(max_new_tokens=10, policy="greedy", ignore_eos=True))
    for prompt, (seq,) in zip(PROMPTS, seqs):
        full = torch.tensor([prompt + seq.token_ids])
        with torch.no_grad():
            logits = model(full).logits[0, len(prompt) - 1 : -1]
        assert logits.argmax(-1).tolist() == seq.token_ids
        assert seq.trace.tau == [0.0] * 10
        # reported under the unscaled distribution
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(seq.token_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(seq.trace.logp), expected, atol=1e-5, rtol=0)


def test_mixed_length_batch_matches_one_by_one(model):
    e = _engine(model)
    params = SamplingParams(max_new_tokens=15, policy="greedy", ignore_eos=True)
    batched = _tokens(e.generate(PROMPTS, params))
    alone = [_tokens(e.generate([p], params))[0] for p in PROMPTS]
    assert batched == alone


def test_sampling_is_batch_invariant(model):
    """A sequence's tokens depend on its seed and stream only, not on its neighbours."""
    e = _engine(model)
    params = SamplingParams(max_new_tokens=15, seed=5, ignore_eos=True)
    for policy in ("learned", "fixed:1.0"):
        p = SamplingParams(**{**params.__dict__, "policy": policy})
        batch = e.new_batch()
        together = batch.add(prompt_rows(PROMPTS, p, n=2))
        while batch.num_running:
            batch.step()
        for i, prompt in enumerate(PROMPTS):
            b = e.new_batch()
            (alone,) = b.add([PromptRow(prompt, p, 2, 0, 2 * i)])
            while b.num_running:
                b.step()
            assert [s.token_ids for s in alone] == [s.token_ids for s in together[i]], policy
            # h differs by float rounding with the batch's shape, so the Beta draws do too (not the tokens)
            for a, t in zip(alone, together[i]):
                torch.testing.assert_close(torch.tensor(a.trace.tau), torch.tensor(t.trace.tau), atol=1e-5, rtol=0)
                assert a.trace.updated == t.trace.updated


def test_continuous_batching_join_and_cancel(llama):
    from introllm.sampler.rng import UNIFORM_CHUNK

    e = _engine(llama)
    # past the chunk of random numbers drawn ahead, at different offsets for each row
    params = SamplingParams(max_new_tokens=UNIFORM_CHUNK + 12, seed=3, ignore_eos=True)
    reference = e.generate(PROMPTS, params)

    batch = e.new_batch()
    (first,) = batch.add([PromptRow(PROMPTS[0], params, 1, 0, 0)])
    for _ in range(4):
        batch.step()
    later = batch.add([PromptRow(PROMPTS[i], params, 1, i, i) for i in (1, 2)])  # joins a running batch, longer prompt
    batch.step()
    (victim,) = batch.add([PromptRow(PROMPTS[3], params, 1, 3, 3)])[0]
    batch.step()
    batch.cancel([victim])
    assert victim.finish_reason == "cancelled"
    while batch.num_running:
        batch.step()
    got = [first[0].token_ids, later[0][0].token_ids, later[1][0].token_ids]
    assert got == [reference[i][0].token_ids for i in range(3)]
    for got_seq, i in ((first[0], 0), (later[1][0], 2)):  # the same decisions, to float rounding of h
        torch.testing.assert_close(got_seq.trace.tau, reference[i][0].trace.tau, atol=1e-4, rtol=0)
    assert len(victim.token_ids) == 1


def test_tokens_are_handed_out_before_the_next_forward_pass(llama):
    """step(on_sampled=...) gives the drawn tokens to the server before the forward pass that
    prepares the next step, so a stream need not wait for it (no forward after the last token)."""
    batch = _engine(llama).new_batch()
    batch.add([PromptRow([5, 6, 7], SamplingParams(max_new_tokens=2, seed=0, ignore_eos=True))])
    order, forward = [], batch._advance
    batch._advance = lambda tokens: (order.append("forward"), forward(tokens))
    for _ in range(2):
        batch.step(on_sampled=lambda seqs: order.append(("sampled", len(seqs[0].token_ids))))
    assert order == [("sampled", 1), "forward", ("sampled", 2)] and not batch.num_running


def test_a_batch_that_does_not_score_actions_takes_the_same_decisions(llama):
    """score_actions = False (the server's batches) leaves the head's log-probs at 0 and changes
    no token, temperature, gate or Beta draw; scored, they are the policy's own log_prob."""
    e = _engine(llama)
    runs = []
    for score in (True, False):
        batch = e.new_batch()
        batch.score_actions = score
        (seqs,) = batch.add([PromptRow(PROMPTS[1], SamplingParams(max_new_tokens=12, seed=5, ignore_eos=True), n=2)])
        while batch.num_running:
            batch.step()
        runs.append(seqs)
    for scored, unscored in zip(*runs):
        assert scored.token_ids == unscored.token_ids
        assert (scored.trace.tau, scored.trace.updated, scored.trace.z) == (
            unscored.trace.tau,
            unscored.trace.updated,
            unscored.trace.z,
        )
        assert any(scored.trace.updated) and all(lp != 0 for lp in scored.trace.temp_logp)
        assert unscored.trace.temp_logp == [0.0] * 12


def test_limits(llama):
    e = _engine(llama)
    seqs = e.generate(PROMPTS, SamplingParams(max_new_tokens=7, seed=0, ignore_eos=True), n=3)
    assert all(len(s.token_ids) == 7 and s.finish_reason == "length" for g in seqs for s in g)
    # Stop tokens: every sequence ends at its first stop token, which is kept.
    stops = tuple(range(10, 60))
    seqs = e.generate(PROMPTS, SamplingParams(max_new_tokens=40, seed=1, stop_token_ids=stops), n=3)
    for s in (s for g in seqs for s in g):
        hits = [i for i, t in enumerate(s.token_ids) if t in stops or t == EOS]
        if s.finish_reason == "stop":
            assert hits == [len(s.token_ids) - 1]
        else:
            assert not hits and len(s.token_ids) == 40
    assert any(s.finish_reason == "stop" for g in seqs for s in g)


def test_eos_ends_sequences():
    model = tiny_llama()
    bias = torch.zeros(VOCAB)
    bias[EOS] = 50.0  # makes EOS overwhelmingly likely
    model.lm_head.bias = torch.nn.Parameter(bias)
    e = _engine(model)
    seqs = e.generate(PROMPTS, SamplingParams(max_new_tokens=10, seed=0))
    assert all(s.token_ids == [EOS] and s.finish_reason == "stop" for (s,) in seqs)
    seqs = e.generate(PROMPTS, SamplingParams(max_new_tokens=4, seed=0, ignore_eos=True))
    assert all(len(s.token_ids) == 4 for (s,) in seqs)


def test_context_limit_and_bad_prompts():
    model = tiny_llama(max_position_embeddings=16)
    e = _engine(model)
    ((seq,),) = e.generate([[5] * 12], SamplingParams(max_new_tokens=50, seed=0, ignore_eos=True))
    assert len(seq.token_ids) == 4 and seq.finish_reason == "length"
    batch = e.new_batch()
    with pytest.raises(ValueError, match="context is 16"):
        batch.add(prompt_rows([[1] * 16]))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        batch.add([PromptRow([1]), PromptRow([])])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        batch.add(prompt_rows([[VOCAB]]))
    with pytest.raises(ValueError, match="unknown temperature policy"):
        batch.add(prompt_rows([[1]], SamplingParams(policy="hot")))
    assert batch.num_running == 0
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


def test_mixed_policies_in_one_batch(llama):
    e = _engine(llama)
    batch = e.new_batch()
    (greedy,) = batch.add(
        prompt_rows(PROMPTS[:1], SamplingParams(max_new_tokens=10, policy="greedy", ignore_eos=True))
    )[0]
    (learned,) = batch.add(prompt_rows(PROMPTS[1:2], SamplingParams(max_new_tokens=10, seed=2, ignore_eos=True)))[0]
    (fixed,) = batch.add(
        prompt_rows(PROMPTS[2:3], SamplingParams(max_new_tokens=10, policy="fixed:0.9", seed=2, ignore_eos=True))
    )[0]
    while batch.num_running:
        batch.step()
    alone = e.generate(PROMPTS[:1], SamplingParams(max_new_tokens=10, policy="greedy", ignore_eos=True))[0][0]
    assert greedy.token_ids == alone.token_ids
    assert fixed.trace.tau == pytest.approx([0.9] * 10)
    assert all(0.6 <= t <= 1.5 for t in learned.trace.tau) and any(learned.trace.updated)


def test_records_are_sane(model):
    e = _engine(model)
    for g in e.generate(PROMPTS, SamplingParams(max_new_tokens=20, seed=4), n=2):
        for s in g:
            t = s.trace
            n = len(s.token_ids)
            assert len(t.tau) == len(t.updated) == len(t.z) == len(t.logp) == len(t.entropy) == len(t.temp_logp) == n
            assert all(0.6 <= x <= 1.5 for x in t.tau)
            assert all(lp <= 0 for lp in t.logp) and all(h >= 0 for h in t.entropy)
            assert t.tau[0] == 1.0 or t.updated[0]  # tau_0 = 1.0 unless the first step updates
            for i in range(1, n):
                assert t.updated[i] or t.tau[i] == t.tau[i - 1]


def test_top_k_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]] * 3)
    kept = filter_logits(logits, torch.tensor([2, 0, 0]), torch.tensor([1.0, 0.5, 1.0])).isfinite()
    assert kept[0].tolist() == [True, True, False, False, False]
    assert kept[1].tolist() == [True, False, False, False, False]  # p(top) = 0.64 >= 0.5
    assert kept[2].all()
    rand = torch.rand(3)
    tok, logp, ent, _, _ = sample_tokens(logits, torch.ones(3), rand, torch.tensor([1, 1, 1]), None)
    assert (
        tok.tolist() == [0, 0, 0]
        and torch.allclose(logp, torch.zeros(3))
        and torch.allclose(ent, torch.zeros(3), atol=1e-6)
    )


def test_inverse_cdf_sampling_matches_softmax():
    from scipy import stats

    from introllm.sampler.rng import uniforms

    n = 40000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -3.0, -20.0]).expand(n, -1)
    tau = torch.full((n,), 0.8)
    rand = uniforms(torch.full((n,), 9), torch.arange(n), torch.zeros(n, dtype=torch.long))[:, 0]
    tok, logp, _, _, _ = sample_tokens(logits, tau, rand)
    probs = torch.softmax(logits[0] / 0.8, -1)
    counts = torch.bincount(tok, minlength=6).double()
    expected = probs.double() * n
    assert stats.chisquare(counts[:5], expected[:5] * counts[:5].sum() / expected[:5].sum()).pvalue > 1e-3
    torch.testing.assert_close(logp, torch.log(probs)[tok])


def test_floored_normaliser_changes_no_draw_logp_or_entropy():
    """At a low temperature a quarter of a real vocabulary lies in exp's underflow range; reading it
    at the floor (for speed) must leave every token, log-prob and entropy as the exact, unfloored
    float64 computation gives them, and a filtered token must keep probability 0."""
    from introllm.sampler.rng import uniforms
    from introllm.sampler.sampling import UNDERFLOW_NATS, floored

    gen = torch.Generator().manual_seed(3)
    n, vocab = 64, 49152
    logits = torch.randn(n, vocab, generator=gen) * 3.0
    tau = torch.linspace(0.05, 1.5, n)
    x = logits / tau[:, None]
    assert ((x.amax(-1, keepdim=True) - x) > UNDERFLOW_NATS).float().mean() > 0.05  # the floor is in play
    rand = uniforms(torch.full((n,), 5), torch.arange(n), torch.zeros(n, dtype=torch.long))[:, 0]
    tok, logp, ent, _, _ = sample_tokens(logits, tau, rand)
    ref = torch.log_softmax(x.double(), -1)
    cdf = ref.exp().cumsum(-1)
    target = rand.double()[:, None] * cdf[:, -1:]
    exact = torch.searchsorted(cdf, target).squeeze(-1)
    # equal to the float64 draw, except where the target lies within float32 rounding of a CDF
    # boundary (here one row: 2e-8 relative); there the draw is one of the two adjacent tokens
    for row in (tok != exact).nonzero().flatten().tolist():
        edge = cdf[row, min(tok[row], exact[row])]
        assert abs(tok[row] - exact[row]) == 1 and abs(edge - target[row, 0]) / target[row, 0] < 1e-6, row
    assert (tok != exact).sum() <= 1
    torch.testing.assert_close(logp.double(), ref.gather(-1, tok[:, None]).squeeze(-1), atol=1e-4, rtol=0)
    # the entropy from logits relative to the row's maximum: float64's to float32 precision (the
    # textbook float32 lse - sum p x loses 1e-3 here, at x ~ 250)
    torch.testing.assert_close(ent.double(), -(ref.exp() * ref).sum(-1), atol=1e-5, rtol=0)
    assert torch.equal(floored(torch.tensor([[0.0, -100.0, float("-inf")]])), torch.tensor([[0.0, -70.0, -70.0]]))
    _, _, ent_k, _, _ = sample_tokens(logits[:2], tau[:2], rand[:2], torch.tensor([3, 3]), None)
    top3 = torch.log_softmax(x[:2].double().topk(3, -1).values, -1)
    torch.testing.assert_close(ent_k.double(), -(top3.exp() * top3).sum(-1), atol=1e-4, rtol=0)


def test_bf16_model_runs(llama):
    e = Engine(llama.to(torch.bfloat16), random_head(48))
    ((seq,),) = e.generate([[5, 6, 7]], SamplingParams(max_new_tokens=8, seed=0, ignore_eos=True))
    assert len(seq.token_ids) == 8 and all(torch.isfinite(torch.tensor(seq.trace.logp)))


def test_refuses_unsupported_attention():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
        layer_types=["sliding_attention"] * 2,
    )
    with pytest.raises(NotImplementedError, match="only full attention"):
        Engine(MistralForCausalLM(cfg))


def test_decoding_leaves_train_mode_alone(llama):
    llama.train()
    _engine(llama).generate(PROMPTS[:1], SamplingParams(max_new_tokens=3, seed=0))
    assert llama.training


def test_top_logprobs(llama):
    e = _engine(llama)
    ((seq,),) = e.generate(PROMPTS[:1], SamplingParams(max_new_tokens=6, seed=0, logprobs=3, policy="fixed:0.7"))
    assert len(seq.trace.top_logprobs) == len(seq.token_ids)
    for tok, lp, top in zip(seq.token_ids, seq.trace.logp, seq.trace.top_logprobs):
        assert len(top) == 3 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
        assert lp <= top[0][1] + 1e-6
        if tok in [i for i, _ in top]:
            assert dict(top)[tok] == pytest.approx(lp, abs=1e-6)
    ((plain,),) = e.generate(PROMPTS[:1], SamplingParams(max_new_tokens=6, seed=0, policy="fixed:0.7"))
    assert plain.trace.top_logprobs == [] and plain.token_ids == seq.token_ids


def test_add_with_per_prompt_params_and_n(llama):
    """Requests with different settings share one prefill and decode as if alone."""
    e = _engine(llama)
    a = SamplingParams(max_new_tokens=6, seed=1, policy="fixed:0.8", ignore_eos=True)
    b = SamplingParams(max_new_tokens=9, seed=2, ignore_eos=True, top_k=5)
    batch = e.new_batch()
    together = batch.add([PromptRow(PROMPTS[0], a, 2, "a", 0), PromptRow(PROMPTS[1], b, 1, "b", 0)])
    while batch.num_running:
        batch.step()
    assert [len(g) for g in together] == [2, 1]
    alone_a = e.generate(PROMPTS[:1], a, n=2)[0]
    alone_b = e.generate(PROMPTS[1:2], b)[0]
    assert [s.token_ids for s in together[0]] == [s.token_ids for s in alone_a]
    assert [s.token_ids for s in together[1]] == [s.token_ids for s in alone_b]
    assert [len(s.token_ids) for s in together[0] + together[1]] == [6, 6, 9]
    assert [s.request_id for s in together[0] + together[1]] == ["a", "a", "b"]
    with pytest.raises(ValueError, match="got 1 SamplingParams for 2 prompts"):
        prompt_rows(PROMPTS[:2], [a])
