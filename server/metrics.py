"""Prometheus metrics, in a registry of the server's own (so several apps can live in one process,
as they do in the tests).

Useful queries: tokens/s ``rate(introllm_generation_tokens_total[1m])`` (or the gauge below);
temperature update rate ``rate(introllm_temperature_updates_total[5m]) /
rate(introllm_generation_tokens_total[5m])``; p95 time to first token
``histogram_quantile(0.95, rate(introllm_time_to_first_token_seconds_bucket[5m]))``.
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60)
_TAU_BUCKETS = (0.05, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 2.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "introllm_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("introllm_prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.generation_tokens = Counter("introllm_generation_tokens", "Tokens generated", registry=r)
        self.throughput = Gauge(
            "introllm_generation_tokens_per_second", "Tokens generated per second over the last 10 s", registry=r
        )
        self.ttft = Histogram(
            "introllm_time_to_first_token_seconds",
            "Arrival to first generated token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "introllm_inter_token_latency_seconds",
            "Time between a sequence's tokens",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "introllm_request_latency_seconds", "Arrival to last byte", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("introllm_queue_depth", "Requests waiting to join the batch", registry=r)
        self.running = Gauge("introllm_running_sequences", "Sequences in the running batch", registry=r)
        self.batch_size = Histogram(
            "introllm_batch_size",
            "Sequences advanced together by one decode step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.temperature = Histogram(
            "introllm_temperature",
            "Sampling temperature of each generated token (0 = greedy)",
            buckets=_TAU_BUCKETS,
            registry=r,
        )
        self.updates = Counter(
            "introllm_temperature_updates", "Tokens at which the policy chose a new temperature", registry=r
        )
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def observe_token(self, tau: float, updated: bool) -> None:
        self.temperature.observe(tau)
        if updated:
            self.updates.inc()

    def observe_step(self, tokens: int, seconds: float) -> None:
        self.generation_tokens.inc(tokens)
        self.batch_size.observe(tokens)
        now = time.monotonic()
        with self._lock:
            self._window.append((now, tokens))
            while self._window and self._window[0][0] < now - 10.0:
                self._window.popleft()
            span = max(now - self._window[0][0], seconds, 1e-3)
            self.throughput.set(
                sum(t for _, t in self._window) / span if len(self._window) > 1 else tokens / max(seconds, 1e-3)
            )

    def render(self) -> bytes:
        return generate_latest(self.registry)
