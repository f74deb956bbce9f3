"""What every response tells the client and the operator (run by ``http.front``).

Before the gate: the request id (nginx's ``X-Request-ID`` when well-formed, else one
made here). As the response starts — the view's, the gate's early answer or an error's:
the rate-limit headers of the quotas counted, the request id, the request metrics and one
JSON access line. ``/metrics`` (Prometheus) answers private networks only.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import secrets
import threading
import time
from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.ctx import _AppCtxGlobals

from .. import logs
from ..metrics import LATENCY, REQUESTS, exposition
from ..problems import NotFound
from . import limits
from .gate import exempt

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIds:
    """Unique request ids without a uuid per request: a random per-process prefix and a
    counter (the prefix is redrawn in a forked child)."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def new(self) -> str:
        if self._pid != os.getpid():
            with self._lock:
                self._pid, self._prefix = os.getpid(), secrets.token_hex(8)
        return f"{self._prefix}{next(self._counter):016x}"


class Instruments:
    """Labelled metric children, looked up once per label set (labels() is not free)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counter = self._requests.get((route, method, status))
        if counter is None:
            counter = self._requests[(route, method, status)] = REQUESTS.labels(route, method, str(status))
        histogram = self._latency.get((route, method))
        if histogram is None:
            histogram = self._latency[(route, method)] = LATENCY.labels(route, method)
        counter.inc()
        histogram.observe(seconds)


_ids = RequestIds()
_instruments = Instruments()


def start(ctx: _AppCtxGlobals, environ: dict[str, Any]) -> None:
    ctx.started = time.perf_counter()
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    # Take nginx's id when it is well-formed; anything else could inject into logs.
    ctx.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else _ids.new()


def finish(ctx: _AppCtxGlobals, req: Request, status: int, headers: list[tuple[str, str]]) -> None:
    """Adds the rate-limit headers and the request id to ``headers``; records the request."""
    request_id = ctx.get("request_id", "")
    counts = ctx.get("rate_counts")
    if counts:
        headers.extend(limits.headers(counts, status=status).items())
    headers.append((REQUEST_ID_HEADER, request_id))
    duration = time.perf_counter() - ctx.get("started", time.perf_counter())
    route = req.url_rule.rule if req.url_rule else "unmatched"
    _instruments.observe(route, req.method, status, duration)
    principal = ctx.get("principal")
    logs.access(
        logs.AccessFields(
            method=req.method,
            route=route,
            path=req.path,
            status=status,
            duration_ms=round(duration * 1000, 2),
            client_ip=req.remote_addr,
            request_id=request_id,
            user_id=principal.id if principal is not None else None,
        )
    )


@exempt
def metrics_endpoint() -> Response:
    """Prometheus metrics, for the private network only; to everyone else it does not exist."""
    allowed = current_app.extensions["statsapi.metrics_networks"]
    try:
        client = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        client = None
    if client is None or not any(client in network for network in allowed):
        raise NotFound
    body, content_type = exposition()
    return Response(body, content_type=content_type)


def init_app(app: Flask, metrics_networks: tuple[str, ...]) -> None:
    app.extensions["statsapi.metrics_networks"] = tuple(ipaddress.ip_network(n) for n in metrics_networks)
    app.add_url_rule("/metrics", "metrics", metrics_endpoint)
