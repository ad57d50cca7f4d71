"""Prometheus metrics: one registry per app (no global state), scraped at ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """Request counters and latencies, plus job and worker gauges read at scrape time.

    Args:
        job_counts: Returns {status: number of jobs}.
        live_workers: Returns the number of workers with a recent heartbeat.
        rate_limits: The configured requests per minute per key, by kind (0: no limit).
    """

    def __init__(
        self,
        job_counts: Callable[[], dict[str, int]],
        live_workers: Callable[[], int],
        rate_limits: dict[str, int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneforge_http_requests_total",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tuneforge_http_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            registry=self.registry,
        )
        # No per-model label: /metrics needs no key, and model ids name tenants (project,
        # suffix, job id). Per-model state is behind a key (``/readyz?model=ID``).
        self.predictions = Counter(
            "tuneforge_predictions_total",
            "Texts classified (all models together).",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tuneforge_rate_limited",
            "Requests refused with 429 by the per-key rate limit, by kind (api, inference).",
            ["kind"],
            registry=self.registry,
        )
        self._rate_limits = dict(rate_limits or {})
        for kind in self._rate_limits:
            self.rate_limited.labels(kind)  # exported at 0 from the start
        self._job_counts = job_counts
        self._live_workers = live_workers
        self.registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Gauges computed at scrape time (prometheus_client custom collector)."""
        jobs = GaugeMetricFamily("tuneforge_jobs", "Fine-tuning jobs by status.", labels=["status"])
        for status, n in sorted(self._job_counts().items()):
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily(
            "tuneforge_live_workers", "Workers with a recent heartbeat.", value=self._live_workers()
        )
        limits = GaugeMetricFamily(
            "tuneforge_rate_limit_per_minute",
            "Configured requests per minute per API key, by kind (0: no limit).",
            labels=["kind"],
        )
        for kind, n in sorted(self._rate_limits.items()):
            limits.add_metric([kind], n)
        yield limits


class MetricsMiddleware:
    """Counts every HTTP request by its route template (not the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
