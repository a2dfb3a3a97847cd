"""Concurrency (continuous batching, disconnects, the queue limit), metrics, the Python client and
the ``introllm complete`` command, against real servers on the embedded model."""

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest
from conftest import free_port, live_server
from prometheus_client.parser import text_string_to_metric_families

from introllm.clients import AsyncClient, BadRequestError, Client, ConnectionFailed, NotFoundError, RateLimitError
from introllm.server.config import ServerConfig

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def url(server_url):
    return server_url


def metrics(url) -> dict[tuple, float]:
    """Every sample of /metrics as {(name, sorted labels): value}, parsed by prometheus_client."""
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_sixteen_concurrent_streams_share_decode_steps(url):
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

    async def one(i):
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Tell me fact number {i} about cats."}],
            max_tokens=24,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
        )
        entries, finish, usage = 0, None, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for c in chunk.choices:
                entries += len((c.model_extra.get("temperature_trace") or {}).get("token_ids", []))
                finish = c.finish_reason or finish
        return entries, finish, usage

    before = metrics(url)

    async def all16():
        return await asyncio.gather(*(one(i) for i in range(16)))

    results = asyncio.run(asyncio.wait_for(all16(), timeout=600))
    assert len(results) == 16
    for entries, finish, usage in results:
        assert finish in ("stop", "length") and usage is not None and entries == usage.completion_tokens > 0
    after = metrics(url)
    # Steps that advanced more than 8 sequences at once: the requests shared decode steps.
    key = ("introllm_batch_size_bucket", (("le", "8.0"),))
    total = ("introllm_batch_size_count", ())
    wide_steps = (after[total] - before[total]) - (after[key] - before[key])
    assert wide_steps > 0
    assert after[("introllm_running_sequences", ())] == 0


async def _leave_after(url: str, body: dict, chunks: int) -> str:
    """A client that reads a few chunks of a stream, then closes its TCP connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(body).encode()
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    seen = b""
    while seen.count(b"data: ") < chunks:
        seen += await reader.read(4096)
    writer.close()
    await writer.wait_closed()
    return "left"


def test_disconnect_frees_the_slot_and_does_not_stall_others(url):
    before = metrics(url)

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:

            async def reader(max_tokens):
                body = {
                    "model": MODEL,
                    "prompt": "Write a story about a lighthouse.",
                    "max_tokens": max_tokens,
                    "stream": True,
                    "seed": 1,
                }
                async with http.stream("POST", "/v1/completions", json=body) as r:
                    lines = [line async for line in r.aiter_lines() if line]
                return "done" if lines[-1] == "data: [DONE]" else "broken"

            leaving = {
                "model": MODEL,
                "prompt": "Write a long story about a lighthouse.",
                "max_tokens": 400,
                "stream": True,
                "seed": 2,
                "ignore_eos": True,
            }
            return await asyncio.gather(_leave_after(url, leaving, 2), reader(20), reader(20), reader(20))

    outcomes = asyncio.run(run())
    assert outcomes == ["left", "done", "done", "done"]
    key_499 = ("introllm_requests_total", (("endpoint", "/v1/completions"), ("status", "499")))
    for _ in range(100):  # the server notices the disconnect and frees the slot
        after = metrics(url)
        if after[("introllm_running_sequences", ())] == 0 and after.get(key_499):
            break
        time.sleep(0.1)
    assert after[("introllm_running_sequences", ())] == 0
    assert after[key_499] - before.get(key_499, 0) == 1
    generated = after[("introllm_generation_tokens_total", ())] - before[("introllm_generation_tokens_total", ())]
    assert generated < 400  # the abandoned 400-token request stopped early


def test_queue_limit_answers_429(embedded):
    with live_server(ServerConfig(max_batch=1, max_queue=1), checkpoint=embedded) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

        async def one():
            try:
                r = await client.completions.create(
                    model=MODEL, prompt="Tell me a story.", max_tokens=30, seed=1, extra_body={"ignore_eos": True}
                )
                return r.usage.completion_tokens
            except openai.RateLimitError as e:
                assert "busy" in str(e)
                return 429

        async def five():
            return await asyncio.gather(*(one() for _ in range(5)))

        results = asyncio.run(five())
        assert results.count(429) >= 2  # one running, one waiting, the rest refused
        assert all(r == 30 for r in results if r != 429)
        with pytest.raises(RateLimitError):  # and our own client types it

            async def flood():
                c = AsyncClient(url)
                await asyncio.gather(*(c.complete("Tell me a story.", max_tokens=30) for _ in range(5)))

            asyncio.run(flood())


def test_metrics_move_by_the_right_amounts(url):
    before = metrics(url)
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    responses = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=7, seed=i)
        for i, p in enumerate(["Hello there", "The weather today"])
    ]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", temperature=5)
    after = metrics(url)

    def delta(name, labels=()):
        key = (name, tuple(sorted(labels)))
        return after.get(key, 0) - before.get(key, 0)

    completion = sum(r.usage.completion_tokens for r in responses)
    prompt = sum(r.usage.prompt_tokens for r in responses)
    updates = sum(sum(r.choices[0].temperature_trace["updated"]) for r in responses)
    assert delta("introllm_requests_total", [("endpoint", "/v1/completions"), ("status", "200")]) == 2
    assert delta("introllm_requests_total", [("endpoint", "/v1/completions"), ("status", "400")]) == 1
    assert delta("introllm_generation_tokens_total") == completion
    assert delta("introllm_prompt_tokens_total") == prompt
    assert delta("introllm_temperature_count") == completion
    assert delta("introllm_temperature_updates_total") == updates
    assert delta("introllm_time_to_first_token_seconds_count") == 2
    assert delta("introllm_inter_token_latency_seconds_count") == completion - 2
    assert delta("introllm_request_latency_seconds_count") == 3
    assert after[("introllm_queue_depth", ())] == 0
    assert ("introllm_generation_tokens_per_second", ()) in after


def test_python_client_sync_and_async(url):
    client = Client(url)
    assert client.health()["status"] == "ok" and client.models() == [MODEL]
    result = client.complete("What is the capital of France?", chat=True, max_tokens=12, temperature=0)
    assert "Paris" in result.text and len(result.choices[0].temperatures) == result.usage["completion_tokens"]
    pieces = list(client.stream("What is the capital of France?", chat=True, max_tokens=12, temperature=0))
    assert "".join(p.text for p in pieces) == result.text
    assert sum(len(p.temperatures) for p in pieces) == result.usage["completion_tokens"]
    assert pieces[-1].usage == result.usage and any(p.finish_reason for p in pieces)
    with pytest.raises(BadRequestError, match="unknown temperature policy") as e:
        client.complete("hi", policy="warm")
    assert e.value.status == 400 and e.value.param == "policy"
    with pytest.raises(NotFoundError):
        Client(url, model="nope").complete("hi")

    async def run():
        a = AsyncClient(url)
        r = await a.complete("Hello", max_tokens=5, seed=3)
        streamed = [p async for p in a.stream("Hello", max_tokens=5, seed=3)]
        return r, streamed

    r, streamed = asyncio.run(run())
    assert "".join(p.text for p in streamed) == r.text
    assert [t for p in streamed for t in p.temperatures] == r.choices[0].temperatures
    with pytest.raises(ConnectionFailed, match="is `introllm serve` running"):
        Client(f"http://127.0.0.1:{free_port()}").models()


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "introllm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "100"},
    )


def test_cli_complete(url, tmp_path):
    r = _cli("complete", "The capital of France is", "--url", url, "--max-tokens", "8", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "8 tokens · tau mean" in r.stdout and "tok/s" in r.stdout
    r = _cli(
        "complete",
        "What is the capital of France?",
        "--chat",
        "--stream",
        "--url",
        url,
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--html",
        str(tmp_path / "t.html"),
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout and "tau mean 0.000" in r.stdout
    page = (tmp_path / "t.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "Paris" in page
    r = _cli("complete", "Hi", "--url", url, "--json", "--max-tokens", "3", "--temperature", "0")
    data = json.loads(r.stdout)
    assert len(data["choices"][0]["temperature_trace"]["temperatures"]) == 3
    r = _cli("complete", "Hi", "--url", url, "--policy", "warm")
    assert r.returncode == 2 and "unknown temperature policy 'warm'" in r.stderr and "Traceback" not in r.stderr
