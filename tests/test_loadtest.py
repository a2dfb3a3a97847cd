"""The load driver's latency figures (clients/loadtest.py; benchmarks/servers.py and `introllm
bench --server` report them) against a hand computation on a recorded stream.

A fake server (httpx's MockTransport) streams SSE chunks while a fake clock advances by known
delays, so TTFT, ITL and TPOT are exact, with no wall-clock assertion: the stream's chunks arrive
at 0.25, 0.30, 0.40 and 0.55 s, the usage chunk at 0.60 s, and the stream ends at 0.62 s."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from introllm.clients import loadtest
from introllm.clients.loadtest import LoadResult, RequestTiming, stream_completion

TEXT_AT = [0.25, 0.30, 0.40, 0.55]  # seconds after the request is sent: each text chunk
USAGE_AT, END_AT = 0.60, 0.62


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_server(clock: Clock, *, completion_tokens: int | None, bodies: list[dict]):
    """A /v1/completions that streams four text chunks (and a usage chunk when asked) at the
    times above, advancing ``clock`` as each chunk is handed to the client."""

    async def chunks():
        for i, t in enumerate(TEXT_AT):
            clock.now = t
            yield f"data: {json.dumps({'choices': [{'index': 0, 'text': f'w{i}'}]})}\n\n".encode()
        if completion_tokens is not None:
            clock.now = USAGE_AT
            usage = {"choices": [], "usage": {"completion_tokens": completion_tokens}}
            yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        clock.now = END_AT

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        clock.now = 0.0  # the request is sent at 0
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stream(chunks()))

    return httpx.MockTransport(handler)


class _Stream(httpx.AsyncByteStream):
    def __init__(self, gen):
        self.gen = gen

    async def __aiter__(self):
        async for part in self.gen:
            yield part


def _record(monkeypatch, completion_tokens: int | None) -> tuple[RequestTiming, dict]:
    clock, bodies = Clock(), []
    monkeypatch.setattr(loadtest.time, "perf_counter", clock)

    async def go():
        transport = fake_server(clock, completion_tokens=completion_tokens, bodies=bodies)
        async with httpx.AsyncClient(base_url="http://fake", transport=transport) as http:
            return await stream_completion(http, "m", "Hi", 4)

    return asyncio.run(go()), bodies[0]


def test_ttft_itl_tpot_of_a_recorded_stream_by_hand(monkeypatch):
    timing, body = _record(monkeypatch, completion_tokens=4)
    assert body["stream"] is True and body["ignore_eos"] is True and body["stream_options"] == {"include_usage": True}
    assert timing.ttft == pytest.approx(0.25)  # the first text chunk, not the request's start
    assert timing.itl == pytest.approx([0.05, 0.10, 0.15])  # gaps between text chunks only
    assert timing.latency == pytest.approx(0.62)  # to the end of the stream
    assert timing.output_tokens == 4
    assert timing.tpot == pytest.approx((0.62 - 0.25) / 3)


def test_tokens_come_from_usage_when_a_chunk_carries_several(monkeypatch):
    """A server that merges tokens into fewer chunks (llama-server can): 6 tokens in 4 chunks."""
    timing, _ = _record(monkeypatch, completion_tokens=6)
    assert timing.output_tokens == 6 and timing.tpot == pytest.approx((0.62 - 0.25) / 5)


def test_without_usage_the_text_chunks_are_counted(monkeypatch):
    timing, _ = _record(monkeypatch, completion_tokens=None)
    assert timing.output_tokens == 4 and timing.tpot == pytest.approx((0.62 - 0.25) / 3)


def test_percentiles_over_requests_and_over_all_gaps():
    """Two recorded requests: TTFT and TPOT per request, ITL over every gap of every request."""
    a = RequestTiming(ttft=0.25, latency=0.62, output_tokens=4, itl=[0.05, 0.10, 0.15])
    b = RequestTiming(ttft=0.45, latency=1.05, output_tokens=5, itl=[0.10, 0.20, 0.10, 0.20])
    result = LoadResult(concurrency=2, requests=2, seconds=1.05, timings=[a, b])
    assert result.percentile("ttft", 0.5) == pytest.approx(0.35)  # (0.25 + 0.45) / 2
    assert result.percentile("ttft", 0.99) == pytest.approx(0.25 + 0.99 * 0.20)
    # gaps sorted: .05 .10 .10 .10 .15 .20 .20 -> median the 4th
    assert result.percentile("itl", 0.5) == pytest.approx(0.10)
    tpots = sorted([(0.62 - 0.25) / 3, (1.05 - 0.45) / 4])
    assert result.percentile("tpot", 0.5) == pytest.approx(sum(tpots) / 2)
    assert result.tokens_per_s == pytest.approx(9 / 1.05)
    summary = result.summary()
    assert summary["ttft_p50_ms"] == pytest.approx(350.0) and summary["output_tokens"] == 9


def test_one_token_has_no_tpot():
    assert math.isnan(RequestTiming(ttft=0.1, latency=0.1, output_tokens=1).tpot)
