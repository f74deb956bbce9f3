"""gunicorn settings for statsapi: ``gunicorn -c gunicorn.conf.py`` (serves ``statsapi.wsgi:app``).

Every value can be changed from the environment without editing this file:

    GUNICORN_BIND            address to listen on (default 0.0.0.0:$PORT, PORT default 8000)
    WEB_CONCURRENCY          worker processes (default 2 x CPUs + 1, at most 8)
    GUNICORN_THREADS         threads per worker (default 4)
    GUNICORN_TIMEOUT         seconds a request may take before its worker is replaced (30)
    GUNICORN_MAX_REQUESTS    recycle a worker after this many requests (default 0 = never)
    GUNICORN_HEADER_TIMEOUT  seconds a client has to send a request's whole header block (10)
    GUNICORN_BODY_TIMEOUT    seconds a client has to send a body of up to 1 MiB (30)
    GUNICORN_IO_TIMEOUT      seconds a body read or response write may make no progress (10)
    PROMETHEUS_MULTIPROC_DIR where workers write their metric samples (see below)

Design notes:

* ``gthread`` workers keep connections from nginx alive (the ``sync`` worker closes every
  connection) and let one slow request not block its worker's other threads. statsapi keeps
  per-request state in ``flask.g`` and one SQLAlchemy session per request, so threads are safe.
  The worker class is gthread's, subclassed in ``statsapi/gunicorn_worker.py`` for running with
  no buffering proxy in front (Render, ``docker run``): a thread only gets a connection once its
  headers (and a body of up to 1 MiB) are complete, so slow clients cannot hold threads;
  header, body and I/O deadlines; no ``Server`` banner; the app's ``Connection: close`` is
  obeyed.
* The app is imported in each worker, not in the master (no ``preload_app``): database
  pools and Redis connections must never be shared across a fork.
* Metrics: prometheus-client's multiprocess mode. Each worker writes its samples to files in
  ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds them up, so counters are the sum over
  all workers, also over workers that were recycled. The variable must be set before any
  worker imports prometheus_client, which is why it is settled here, at config load time.
  Stale files from an earlier run would corrupt the sums, so the directory is emptied when
  the master starts. With a read-only root filesystem it must be a writable tmpfs
  (the Dockerfile and compose.yaml use /tmp/prometheus on a tmpfs).
* Logs: gunicorn's own lines are JSON on stderr; the app writes its JSON lines (one access
  line per request, with request_id) to stdout, so gunicorn's access log is off — and its
  logger class does not even build the access line's fields (gunicorn builds them for every
  request whenever a logging config is given, whether or not anything logs them).
* Proxy headers are trusted in one place only, the app's ProxyFix (TRUSTED_PROXY_HOPS), so
  gunicorn's own X-Forwarded-Proto handling is switched off.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn import util as gunicorn_util

from statsapi.config import load_dotenv_file

# A .env file configures gunicorn (and the app in its workers) as it does `flask run`;
# variables already in the environment win.
load_dotenv_file()
_env = os.environ.get


def _non_negative_int(name: str, default: int) -> int:
    raw = _env(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {raw!r}")
    return value


def _default_workers() -> int:
    return min(2 * (os.cpu_count() or 1) + 1, 8)


# ---- multiprocess metrics directory (settled before anything imports prometheus_client) ----
_created_metrics_dir: str | None = None
if not _env("PROMETHEUS_MULTIPROC_DIR"):
    _created_metrics_dir = tempfile.mkdtemp(prefix="statsapi-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir
METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

# ---- server -----------------------------------------------------------------------------------
# The app to serve, so `gunicorn -c gunicorn.conf.py` works as the README shows (an app
# given on the command line still wins).
wsgi_app = "statsapi.wsgi:app"
bind = [_env("GUNICORN_BIND") or f"0.0.0.0:{_env('PORT') or '8000'}"]
workers = _non_negative_int("WEB_CONCURRENCY", _default_workers()) or 1
worker_class = "statsapi.gunicorn_worker.ThreadWorker"
threads = _non_negative_int("GUNICORN_THREADS", 4) or 1
timeout = _non_negative_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = 30
# Longer than nginx's upstream keepalive_timeout (60 s), so nginx closes idle connections first.
keepalive = 75
# Workers are not recycled by default. A recycle re-imports the app and runs create_app
# (~2 s of CPU on this hardware) while every connection piles onto the surviving worker;
# nothing in statsapi grows without bound (its caches are bounded LRUs), so there is no
# leak to recycle away. Set GUNICORN_MAX_REQUESTS to recycle anyway (10 % jitter).
max_requests = _non_negative_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10
# Heartbeat files on a RAM-backed filesystem: a disk-backed /tmp can stall workers.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # noqa: S108 (RAM, not a temp file)
# No control socket: it would need a writable $HOME and is not used in containers.
control_socket_disable = True

# Only the app's ProxyFix interprets X-Forwarded-*; gunicorn must not do it a second time.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}

# Request size limits (gunicorn's defaults, written down: nginx enforces tighter ones first).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190


# ---- logging ------------------------------------------------------------------------------------
class NoAccessLogger(glogging.Logger):
    """gunicorn's logger without its access line (statsapi writes its own, with request_id)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


logger_class = NoAccessLogger
accesslog = None
errorlog = "-"
loglevel = (_env("LOG_LEVEL") or "info").lower()
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "{asctime}{levelname}{name}{message}",
            "style": "{",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        }
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    },
    # No root handler from gunicorn: the app adds its own JSON handler on stdout when it loads
    # (one access line per request, with request_id); a second one would duplicate every line.
    "root": {"handlers": [], "level": "WARNING"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


# ---- gunicorn's own error responses -------------------------------------------------------------
# Requests gunicorn rejects before the app sees them (a header over limit_request_field_size,
# too many headers, a malformed request line) get its HTML page by default. Behind nginx they
# never get that far, but a deployment without it (Render) would break the "every error is
# problem+json" contract, so gunicorn's writer is replaced, in the master, before any fork.
def _write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status_int, "detail": mesg or reason}
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn_util.write_error = _write_problem


# ---- hooks --------------------------------------------------------------------------------------
def on_starting(server: Any) -> None:
    """Refuse a bad configuration once, here in the master (one clear line, exit 2),
    instead of forking workers that each die and get respawned forever. Then start every
    run with an empty metrics directory (stale samples would skew the sums)."""
    # The directory before statsapi: importing it creates its metrics, whose files live
    # there (a fresh tmpfs path, as a new replica gets, does not exist yet).
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    if not os.access(METRICS_DIR, os.W_OK):
        raise RuntimeError(f"PROMETHEUS_MULTIPROC_DIR {METRICS_DIR} is not writable (mount a tmpfs there)")
    from statsapi import preflight

    preflight()
    for stale in METRICS_DIR.glob("*.db"):
        stale.unlink()
    server.log.info("metrics: multiprocess samples in %s", METRICS_DIR)


def worker_exit(server: Any, worker: Any) -> None:
    """Write the access lines the worker still holds (production buffers them briefly)."""
    from statsapi.logs import flush_access

    flush_access()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges; its counters stay in the sums."""
    from statsapi.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
