"""The project's one streaming load driver: N concurrent clients against any OpenAI-compatible server,
measured as the field measures serving (vLLM's ``benchmark_serving``, GuideLLM, AIPerf).

Each client sends streamed ``/v1/completions`` one after another, each of exactly ``max_tokens``
tokens (``ignore_eos``), so throughput compares like for like across concurrency levels and
servers. Per request (``RequestTiming``):

    TTFT     time to first token: from sending the request to the first chunk that carries text
    ITL      inter-token latency: the gaps between successive text-carrying chunks
    TPOT     time per output token after the first: (latency - TTFT) / (output tokens - 1)
    tokens   the output tokens the server reports in its final ``usage`` (``stream_options.
             include_usage``); a server that sends none is counted by its text-carrying chunks

Output tokens/s = all requests' tokens / the wall time of the level. Used by ``introllm bench
--server`` and ``benchmarks/servers.py``. Depends only on httpx.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

import httpx

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue.",
    "List some ideas for a weekend trip in the mountains.",
    "Describe how a bicycle works.",
]


@dataclass
class RequestTiming:
    """What one streamed completion looked like from the client: seconds and tokens."""

    ttft: float
    """Seconds from sending the request to its first text-carrying chunk."""
    latency: float
    """Seconds from sending the request to its last chunk."""
    output_tokens: int
    """Completion tokens: the server's usage figure, else its text-carrying chunks."""
    itl: list[float] = field(default_factory=list)
    """Seconds between successive text-carrying chunks (one fewer than the chunks)."""

    @property
    def tpot(self) -> float:
        """Time per output token after the first, (latency - TTFT) / (tokens - 1); NaN for one token."""
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else math.nan


@dataclass
class LoadResult:
    """One concurrency level: every request's timing, the wall time, and the failures."""

    concurrency: int
    requests: int
    seconds: float = 0.0
    failed: int = 0
    timings: list[RequestTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return sum(t.output_tokens for t in self.timings)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return len(self.timings) / self.seconds if self.seconds else 0.0

    def percentile(self, metric: str, q: float) -> float:
        """The q-quantile (0..1, linear interpolation) of ``ttft``, ``tpot`` or ``itl`` (all gaps
        of all requests), in seconds; NaN without data."""
        if metric == "itl":
            values = [g for t in self.timings for g in t.itl]
        else:
            values = [getattr(t, metric) for t in self.timings]
        return percentile([v for v in values if not math.isnan(v)], q)

    def summary(self) -> dict:
        """Plain numbers for JSON: throughput and the latency percentiles in milliseconds."""
        out = {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "completed": len(self.timings),
            "failed": self.failed,
            "seconds": self.seconds,
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": self.tokens_per_s,
            "requests_per_s": self.requests_per_s,
        }
        for metric in ("ttft", "itl", "tpot"):
            for q in (0.5, 0.9, 0.99):
                out[f"{metric}_p{int(q * 100)}_ms"] = 1000 * self.percentile(metric, q)
        return out


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), NaN for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (k - lo)


async def stream_completion(
    http: httpx.AsyncClient,
    model: str,
    prompt: str,
    max_tokens: int,
    *,
    temperature: float | None = None,
    seed: int | None = None,
) -> RequestTiming:
    """One streamed completion of exactly ``max_tokens`` tokens (``ignore_eos``); its timing.
    Raises RuntimeError for a non-200 answer (the status and the start of the body)."""
    body: dict = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    if temperature is not None:
        body["temperature"] = temperature
    if seed is not None:
        body["seed"] = seed
    start = time.perf_counter()
    chunk_times: list[float] = []
    usage = None
    async with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"].get("completion_tokens")
            if any(c.get("text") for c in chunk.get("choices", [])):
                chunk_times.append(time.perf_counter())
    end = time.perf_counter()
    if not chunk_times:
        raise RuntimeError("the stream carried no text")
    return RequestTiming(
        ttft=chunk_times[0] - start,
        latency=end - start,
        output_tokens=int(usage) if usage is not None else len(chunk_times),
        itl=[b - a for a, b in zip(chunk_times, chunk_times[1:])],
    )


async def run_load(
    url: str,
    concurrency: int,
    requests: int,
    max_tokens: int = 48,
    api_key: str | None = None,
    model: str | None = None,
    *,
    temperature: float | None = None,
    seeds: bool = True,
    prompts: list[str] = PROMPTS,
    timeout: float = 1800,
) -> LoadResult:
    """``requests`` streamed completions, ``concurrency`` at a time, after one uncounted warm-up.

    temperature: None leaves the server's default (ours: the learned policy); seeds: send request
    i with seed i (off for servers that refuse per-request seeds). A failed request is counted in
    ``failed`` with its message in ``errors``; it does not stop the others."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout, limits=limits) as http:
        if model is None:
            r = await http.get("/v1/models")
            r.raise_for_status()
            model = r.json()["data"][0]["id"]
        result = LoadResult(concurrency, requests)
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                i = queue.pop(0)
                try:
                    result.timings.append(
                        await stream_completion(
                            http,
                            model,
                            prompts[i % len(prompts)],
                            max_tokens,
                            temperature=temperature,
                            seed=i if seeds else None,
                        )
                    )
                except (RuntimeError, httpx.HTTPError) as e:
                    result.failed += 1
                    result.errors.append(str(e) or type(e).__name__)

        await stream_completion(http, model, prompts[0], 4, temperature=temperature)  # warm-up, not counted
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
        return result


def summary_rows(results: list[LoadResult]) -> list[dict[str, str]]:
    """Table rows (strings) of several levels: throughput, its ratio to the first level, and
    TTFT / ITL / TPOT at p50 and p99 in milliseconds."""
    base = results[0].tokens_per_s if results and results[0].tokens_per_s else 1.0
    rows = []
    for r in results:
        rows.append(
            {
                "clients": str(r.concurrency),
                "requests": f"{r.requests}" + (f" ({r.failed} failed)" if r.failed else ""),
                "req/s": f"{r.requests_per_s:.2f}",
                "output tok/s": f"{r.tokens_per_s:.1f}",
                f"vs {results[0].concurrency} client": f"{r.tokens_per_s / base:.2f}x",
                "TTFT p50/p99 (ms)": "/".join(f"{1000 * r.percentile('ttft', q):.0f}" for q in (0.5, 0.99)),
                "ITL p50/p99 (ms)": "/".join(f"{1000 * r.percentile('itl', q):.1f}" for q in (0.5, 0.99)),
                "TPOT p50/p99 (ms)": "/".join(f"{1000 * r.percentile('tpot', q):.1f}" for q in (0.5, 0.99)),
            }
        )
    return rows
