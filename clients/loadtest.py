"""Drive a running server with N concurrent streaming clients and measure what they see.

Each client sends streamed completions one after another, each of exactly ``max_tokens`` tokens
(``ignore_eos``), so throughput compares like for like across concurrency levels. Per request it
records the time to first token (TTFT) and the gaps between tokens (ITL, a chunk carrying k
tokens counts as k gaps of 1/k of its delay). Depends only on httpx.
"""

from __future__ import annotations

import asyncio
import json
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
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    output_tokens: int
    failed: int
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (k - lo)


async def _one(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, seed: int, result: LoadResult) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True, "seed": seed}
    start = last = time.perf_counter()
    tokens = 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            result.failed += 1
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            new = sum(len((c.get("temperature_trace") or {}).get("token_ids", [])) for c in chunk.get("choices", []))
            if not new:
                continue
            now = time.perf_counter()
            if tokens == 0:
                result.ttft.append(now - start)
            else:
                result.itl.extend([(now - last) / new] * new)
            tokens += new
            last = now
    result.output_tokens += tokens


async def run_load(url: str, concurrency: int, requests: int, max_tokens: int = 48, api_key: str | None = None, model: str | None = None) -> LoadResult:
    """``requests`` streamed completions, ``concurrency`` at a time."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600, limits=limits) as http:
        if model is None:
            r = await http.get("/v1/models")
            r.raise_for_status()
            model = r.json()["data"][0]["id"]
        result = LoadResult(concurrency, requests, 0.0, 0, 0)
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                await _one(http, model, PROMPTS[i % len(PROMPTS)], max_tokens, i, result)

        await _one(http, model, PROMPTS[0], 4, 0, LoadResult(1, 1, 0, 0, 0))  # warm-up, not counted
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
        return result


def summary_rows(results: list[LoadResult]) -> list[dict[str, str]]:
    base = results[0].tokens_per_s if results else 1.0
    rows = []
    for r in results:
        rows.append(
            {
                "clients": str(r.concurrency),
                "requests": f"{r.requests}" + (f" ({r.failed} failed)" if r.failed else ""),
                "req/s": f"{r.requests_per_s:.2f}",
                "output tok/s": f"{r.tokens_per_s:.1f}",
                f"vs {results[0].concurrency} client": f"{r.tokens_per_s / base:.2f}x",
                "TTFT p50/p90/p99 (ms)": "/".join(f"{1000 * percentile(r.ttft, q):.0f}" for q in (0.5, 0.9, 0.99)),
                "ITL p50/p90/p99 (ms)": "/".join(f"{1000 * percentile(r.itl, q):.0f}" for q in (0.5, 0.9, 0.99)),
            }
        )
    return rows

