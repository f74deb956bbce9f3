"""Prometheus metrics that stay correct under several gunicorn workers (Flask-free).

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn does this via ``gunicorn.conf.py``),
every worker writes its samples to that directory and ``/metrics`` aggregates them;
without it (embedded default, tests) the process registry is used.
"""

from __future__ import annotations

import os

# prometheus-client switches to multiprocess mode when the variable merely exists; an
# empty value would then fail on the first sample. Empty means unset.
if "PROMETHEUS_MULTIPROC_DIR" in os.environ and not os.environ["PROMETHEUS_MULTIPROC_DIR"].strip():
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "statsapi_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "statsapi_http_request_duration_seconds",
    "Request latency by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RATE_LIMITED = Counter(
    "statsapi_rate_limit_rejections_total",
    "Requests rejected by a rate limit, by route template.",
    ["route"],
)
AUTH_FAILURES = Counter(
    "statsapi_auth_failures_total",
    "Failed authentications by reason.",
    ["reason"],
)
CACHE_REQUESTS = Counter(
    "statsapi_stats_cache_requests_total",
    "Stats cache lookups by result (hit, miss, bypass when Redis is down).",
    ["result"],
)
STATS_COMPUTATIONS = Counter(
    "statsapi_stats_computations_total",
    "Stats aggregations run against the database.",
)
DEPENDENCY_UP = Gauge(
    "statsapi_dependency_up",
    "1 when a backing service answered on last use, 0 when degraded.",
    ["dependency"],
    multiprocess_mode="livemin",
)
DEGRADED_EVENTS = Counter(
    "statsapi_degraded_events_total",
    "Transitions into degraded mode, by dependency.",
    ["dependency"],
)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every metric, summed over all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
