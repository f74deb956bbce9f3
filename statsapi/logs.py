"""JSON log lines with the request's id, and the request id itself.

Every line is one JSON object on stdout: time, level, logger, message and, inside a
request, ``request_id`` and ``user_id``. Each request ends with one access line (method,
route template, path, status, duration). Bodies, headers and query strings are never
logged, so neither are passwords nor tokens.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from .metrics import LATENCY, REQUESTS

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("statsapi.access")


class _DropDevServerAccessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return " - - [" not in record.getMessage()


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id")
            principal = g.get("principal")
            record.user_id = principal.id if principal is not None else None
        return True


def configure(level: str) -> None:
    """Route every logger (ours, gunicorn's, libraries') through one JSON handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    handler.addFilter(RequestContextFilter())
    handler.statsapi = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Replace our own earlier handler (apps built again, e.g. in tests), keep others'.
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "statsapi", False)] + [handler]
    root.setLevel(level)
    # The dev server's own access lines would duplicate ours; its start-up lines
    # ("Running on http://...") stay, so `make run` says where it listens.
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.INFO)
    if not any(isinstance(f, _DropDevServerAccessLines) for f in werkzeug.filters):
        werkzeug.addFilter(_DropDevServerAccessLines())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _start() -> None:
    g.started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    # Take nginx's id when it is well-formed; anything else could inject into logs.
    g.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    duration = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else "unmatched"
    REQUESTS.labels(route=route, method=request.method, status=str(response.status_code)).inc()
    LATENCY.labels(route=route, method=request.method).observe(duration)
    extra: dict[str, Any] = {
        "method": request.method,
        "route": route,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": round(duration * 1000, 2),
        "client_ip": request.remote_addr,
    }
    access_log.info("request", extra=extra)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
