"""JSON log lines: one format for every logger.

Every line is one JSON object on stdout: time, level, logger, message and, inside a
request, ``request_id`` and ``user_id``. Each request ends with one access line (method,
route template, path, status, duration; written by ``http.observe``). Bodies, headers
and query strings are never logged, so neither are passwords nor tokens.

The formatter is ours, not python-json-logger's: one line per request is on the hot path,
and a formatter that knows its fields costs a fraction of a generic one. gunicorn's own
lines use it too (``gunicorn.conf.py``), so there is one format.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any, NamedTuple

from flask import g, has_app_context

access_log = logging.getLogger("statsapi.access")

# Attributes every LogRecord has; anything else on a record came as ``extra`` and is logged.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


_quote = json.encoder.encode_basestring_ascii  # what json.dumps does to a string


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


class AccessFields(NamedTuple):
    """One access line's values, in the line's order (``http.observe`` fills them in)."""

    method: str
    route: str
    path: str
    status: int
    duration_ms: float
    client_ip: str | None
    request_id: str
    user_id: int | None


class JsonLines(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra}`` as one JSON line."""

    def __init__(self, *_: Any, **__: Any) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(created))
        return self._stamp

    _encode = json.JSONEncoder(default=str).encode  # json.dumps(default=...) builds one per call

    def line(self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
        return self._encode(
            {"time": self._time(created), "level": level, "logger": logger, "message": message, **fields}
        )

    def access_line(self, created: float, request: AccessFields) -> str:
        """``line()``'s output for an access line, byte for byte, without building a dict
        and walking it: its fields are known, and only their values vary."""
        method, route, path, status, duration_ms, client_ip, request_id, user_id = request
        return (
            f'{{"time": {_text(self._time(created))}, "level": "INFO", "logger": "statsapi.access", '
            f'"message": "request", "method": {_text(method)}, "route": {_text(route)}, '
            f'"path": {_text(path)}, "status": {int(status)}, "duration_ms": {float(duration_ms)!r}, '
            f'"client_ip": {_text(client_ip)}, "request_id": {_text(request_id)}, '
            f'"user_id": {"null" if user_id is None else int(user_id)}}}'
        )

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in record.__dict__.items() if key not in _STANDARD}
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields)


class AccessLines:
    """Where access lines go: the JSON handler's stream, in whole lines.

    With ``flush_seconds`` at 0 each line is written (and flushed) as its request ends.
    Above 0 (production's default, ``ACCESS_LOG_FLUSH_SECONDS``), lines wait in memory
    and are written together: when the next line would pass ``CHUNK`` bytes, and at the
    latest every ``flush_seconds`` (a daemon thread per process), and when the process
    exits. nginx offers the same (``access_log ... buffer= flush=``), and Envoy flushes
    its access log once a second: a write per request is a system call that hands the
    GIL to another thread, about a tenth of a small request's cost. A chunk never passes
    ``CHUNK`` (PIPE_BUF), so each is one atomic write: workers sharing a pipe never cut
    into each other's lines. What a process killed with SIGKILL had buffered (at most
    ``flush_seconds`` of lines) is lost; error and warning lines are never buffered.
    """

    CHUNK = 4096

    def __init__(self, handler: logging.StreamHandler[Any], flush_seconds: float) -> None:
        self.handler = handler
        self.flush_seconds = flush_seconds
        self._lines: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._flusher_pid = -1

    def write(self, line: str) -> None:
        if self.flush_seconds <= 0:
            self._emit(line)
            return
        with self._lock:
            if self._size + len(line) > self.CHUNK:
                self._drain()
            self._lines.append(line)
            self._size += len(line)
            if self._flusher_pid != os.getpid():  # none yet in this process (or a fork's parent's)
                self._start_flusher()

    def flush(self) -> None:
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            self._size = 0
            self._emit(text)

    def _emit(self, text: str) -> None:
        handler = self.handler
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(text)
            handler.stream.flush()

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_periodically, name="access-log-flush", daemon=True).start()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()


_handler: logging.StreamHandler[Any] | None = None
_access_lines: AccessLines | None = None


def access(fields: AccessFields) -> None:
    """The request's access line, in the same format as every other line, handed straight
    to ``AccessLines``: one line per request is the hot path, and the logging machinery
    around a record (record, filters, handler lookup) costs more than the line itself."""
    lines = _access_lines
    if lines is None or not access_log.isEnabledFor(logging.INFO):
        return
    formatter: JsonLines = lines.handler.formatter  # type: ignore[assignment]
    lines.write(formatter.access_line(time.time(), fields) + "\n")


def flush_access() -> None:
    """Write the access lines still buffered (process exit, tests)."""
    if _access_lines is not None:
        _access_lines.flush()


atexit.register(flush_access)


class _DropDevServerAccessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return " - - [" not in record.getMessage()


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if has_app_context():  # the front door's context: gate and view alike
            record.request_id = g.get("request_id")
            principal = g.get("principal")
            record.user_id = principal.id if principal is not None else None
        return True


def configure(level: str, access_flush_seconds: float = 0.0) -> None:
    """Route every logger (ours, gunicorn's, libraries') through one JSON handler."""
    # Our lines carry no source location, thread or process: don't compute them per record
    # (the logging HOWTO's "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    handler.addFilter(RequestContextFilter())
    handler.statsapi = True  # type: ignore[attr-defined]
    global _handler, _access_lines  # noqa: PLW0603 (the one JSON handler, set up once per app build)
    flush_access()  # lines an earlier build buffered (apps built again, e.g. in tests)
    _handler = handler
    _access_lines = AccessLines(handler, access_flush_seconds)
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
