"""Prometheus metrics of ``jace serve``: requests by route and status, latency, batch sizes, queue depth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Telemetry:
    """One registry per server, so several servers (or tests) in a process never share counters.

    Example:
        >>> telemetry = Telemetry()
        >>> telemetry.requests.labels(route="/rerank", status="200").inc()
        >>> b"jace_requests_total" in telemetry.render()
        True
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("jace_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "jace_request_latency_seconds", "Time from request to response.", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.batch_pairs = Histogram(
            "jace_batch_pairs", "Pairs (or contexts) in one model call, merged across requests.", ["kind"], registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "jace_batch_tokens", "Tokens in one model call, merged across requests.", ["kind"], registry=self.registry,
            buckets=(64, 256, 1024, 4096, 16384, 65536, 262144),
        )  # fmt: skip
        self.queue_depth = Gauge("jace_queue_depth", "Requests waiting for or in the model worker.", registry=self.registry)

    def on_batch(self, kind: str, pairs: int, tokens: int) -> None:
        self.batch_pairs.labels(kind=kind).observe(pairs)
        self.batch_tokens.labels(kind=kind).observe(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
