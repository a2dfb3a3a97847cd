"""The server over a real socket, driven by the official ``openai`` client, on the embedded model:
every case on the torch backend and on the llama.cpp backend (the embedded model's GGUF as
shipped; issue 28), the same assertions."""

import json

import httpx
import openai
import pytest
from conftest import check_trace

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def url(backend_url):
    return backend_url


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_models_and_health(url, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(url + "/health").json() == {"status": "ok", "model": MODEL}


def test_completion_learned(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=12, seed=3)
    (choice,) = r.choices
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens == len(choice.temperature_trace["token_ids"])
    check_trace(choice.temperature_trace, r.usage.completion_tokens)
    assert choice.finish_reason in ("stop", "length") and choice.text
    assert any(choice.temperature_trace["updated"])  # the untrained head updates half the time


def test_chat_greedy_is_deterministic(client):
    kw = dict(
        model=MODEL,
        # not "What is the capital of France?": there "The" and "L" are 0.08 apart (a near-tie that
        # llama.cpp's 8-bit activations flip: docs/benchmarks.md); here both backends answer alike
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        temperature=0,
        max_tokens=16,
    )
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert "Paris" in a.choices[0].message.content
    trace = a.choices[0].temperature_trace
    check_trace(trace, a.usage.completion_tokens, lo=0.0, hi=0.0)
    assert not any(trace["updated"])


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=10, seed=42)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    assert a.choices[0].temperature_trace == b.choices[0].temperature_trace


def test_fixed_temperature_and_policy_by_name(client):
    r = client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, temperature=0.7, seed=1)
    assert r.choices[0].temperature_trace["temperatures"] == pytest.approx([0.7] * r.usage.completion_tokens)
    r = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=12, seed=1, extra_body={"policy": "ead:warmup=2,gamma=0.8"}
    )
    temps = r.choices[0].temperature_trace["temperatures"]
    assert temps[:2] == pytest.approx([1.2, 1.2]) and temps[2] == pytest.approx(1.2 * 0.8**2)


def test_n_and_stop(client):
    r = client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=12, n=3, seed=5, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        temperature=0,
        max_tokens=16,
        stop=[" is"],
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and " is" not in choice.message.content
    assert choice.message.content == "The capital of France"


def test_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5, logprobs=2, temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert all(len(t) <= 2 for t in lp.top_logprobs) and all(v <= 0 for v in lp.token_logprobs)
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens and all(len(c.top_logprobs) == 3 for c in content)
    assert content[0].top_logprobs[0].logprob == pytest.approx(content[0].logprob, abs=1e-5)  # greedy = top-1


def _check_stream(chunks, chat):
    text, entries, finish = "", {k: [] for k in ("token_ids", "tokens", "temperatures", "updated")}, None
    usage = None
    for ch in chunks:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            text += (c.delta.content or "") if chat else c.text
            trace = c.model_extra.get("temperature_trace")
            if trace:
                for k in entries:
                    entries[k] += trace[k]
            finish = c.finish_reason or finish
    assert usage is not None and finish in ("stop", "length")
    check_trace(entries, usage.completion_tokens, lo=0.0)
    return text, entries


def test_streaming_completion_and_chat(client):
    stream = client.completions.create(
        model=MODEL,
        prompt="The capital of France is",
        max_tokens=10,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, entries = _check_stream(list(stream), chat=False)
    full = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10, seed=7)
    assert text == full.choices[0].text and entries == full.choices[0].temperature_trace
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    _check_stream(list(stream), chat=True)


def test_raw_sse_format(url):
    body = {
        "model": MODEL,
        "prompt": "Hi",
        "max_tokens": 3,
        "stream": True,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", url + "/v1/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [l for l in r.iter_lines() if l]
    assert all(l.startswith("data: ") for l in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
