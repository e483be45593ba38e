"""Prometheus metrics of one server: requests, errors and latency per endpoint and stage.

Each app gets its own :class:`prometheus_client.CollectorRegistry` (never the global
one), so tests and embedding programs can create many apps in one process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Metrics", "STAGES"]

STAGES = ("decode", "encode", "search", "metadata")


class Metrics:
    """``fghash_requests_total{endpoint,status}``, ``fghash_request_seconds{endpoint}``
    and ``fghash_stage_seconds{stage}``."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fghash_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.latency = Histogram(
            "fghash_request_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=buckets,
            registry=self.registry,
        )
        self.stages = Histogram(
            "fghash_stage_seconds",
            "Time spent per stage of a request: decode, encode, search, metadata.",
            ["stage"],
            buckets=buckets,
            registry=self.registry,
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as ``stage`` (one of :data:`STAGES`)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages.labels(stage=name).observe(time.perf_counter() - t0)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
