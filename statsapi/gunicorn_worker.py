"""gunicorn's ``gthread`` worker, hardened for running without a buffering proxy in front
(Render, ``docker run``): ``worker_class = "statsapi.gunicorn_worker.ThreadWorker"``.

* **Request headers are read by the worker's event loop, not by a thread.** Stock gthread
  hands a connection to a thread as soon as its first byte arrives, and that thread then
  blocks until the headers are complete: 24 clients dripping one byte every 2 s hold every
  thread of every worker and ``/health`` stops answering. Here a connection only reaches
  the thread pool once its whole header block is buffered, so a slow client costs one
  socket in the poller, never a thread. The header block must arrive within
  ``GUNICORN_HEADER_TIMEOUT`` seconds (default 10, like nginx's ``client_header_timeout``)
  and fit in ``MAX_HEADER_BYTES``; otherwise the client gets a 408 / 431 and the connection
  closes. Threads, psycopg2 and the app see exactly what they saw before: the same thread
  pool runs the same WSGI calls.
* **Body reads and response writes are bounded**: each socket operation of a request gives
  up after ``GUNICORN_IO_TIMEOUT`` seconds without progress (default 10, like nginx's
  ``client_body_timeout``), so a client that stops sending or reading frees its thread.
* **Responses**: no ``Server`` header (no product or version banner), and a
  ``Connection: close`` from the app (``statsapi.edge.BodyGuard`` sets it when a body was
  left unread) closes the connection, as the header promises. Stock gunicorn drops the
  app's ``Connection`` header and may answer ``keep-alive`` on a connection it then closes.

This subclasses gunicorn internals (``enqueue_req``, ``murder_pending``, ``handle_request``,
the HTTP/1 ``Response``); pyproject.toml keeps gunicorn below its next major version and
tests/e2e/test_http_edge.py exercises each seam against the real server.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import gthread


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    value = float(raw) if raw else default
    if value <= 0:
        raise ValueError(f"{name} must be more than 0, got {raw!r}")
    return value


HEADER_TIMEOUT = _seconds("GUNICORN_HEADER_TIMEOUT", 10.0)
IO_TIMEOUT = _seconds("GUNICORN_IO_TIMEOUT", 10.0)
# nginx allows 4 x 8 KiB of headers; gunicorn's own per-line limits still apply below this.
MAX_HEADER_BYTES = 64 * 1024
_HEADER_ENDS = (b"\r\n\r\n", b"\n\n")


class Response(wsgi.Response):
    """gunicorn's HTTP/1 response without a ``Server`` header, honouring ``Connection: close``."""

    def process_headers(self, headers: list[tuple[str, str]]) -> None:
        super().process_headers(headers)
        for name, value in headers:
            if name.lower() == "connection" and "close" in value.lower().replace(" ", "").split(","):
                self.force_close()

    def default_headers(self) -> list[str]:
        return [line for line in super().default_headers() if not line.lower().startswith("server:")]


def _headers_complete(data: bytes) -> bool:
    return any(end in data for end in _HEADER_ENDS)


class ThreadWorker(gthread.ThreadWorker):
    def init_process(self) -> None:
        # wsgi.create() looks the class up at each request: every HTTP/1 response of this
        # worker process is ours (HTTP/2 keeps its own class; it is not enabled here).
        wsgi.Response = Response
        self._awaiting_headers: dict[Any, float] = {}
        super().init_process()

    # -- connections reach the thread pool only with their whole header block -----------------
    def enqueue_req(self, conn: Any) -> None:
        if self.cfg.is_ssl or conn.is_http2:
            super().enqueue_req(conn)  # TLS handshakes and HTTP/2 keep gthread's own path
            return
        if conn.parser is not None and _headers_complete(conn.parser.unreader.buf.getvalue()):
            super().enqueue_req(conn)  # pipelined: the next request is already buffered
            return
        if conn.parser is None:
            conn.init()  # plain HTTP/1: only builds the parser, reads nothing
        conn.header_bytes = bytearray(conn.parser.unreader.take_buffered())
        conn.sock.setblocking(False)
        self._awaiting_headers[conn] = time.monotonic() + HEADER_TIMEOUT
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_headers, conn))

    def _read_headers(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop_waiting(conn)
            return
        conn.header_bytes += data
        if _headers_complete(conn.header_bytes):
            self._stop_waiting(conn)
            conn.parser.unreader.unread(bytes(conn.header_bytes))
            conn.header_bytes = None
            conn.data_ready = True
            conn.sock.setblocking(True)
            super().enqueue_req(conn)
        elif len(conn.header_bytes) > MAX_HEADER_BYTES:
            self._drop_waiting(
                conn, (431, "Request Header Fields Too Large", "The request's header block is too large.")
            )

    def _stop_waiting(self, conn: Any) -> None:
        del self._awaiting_headers[conn]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _drop_waiting(self, conn: Any, error: tuple[int, str, str] | None = None) -> None:
        self._stop_waiting(conn)
        if error is not None:
            with contextlib.suppress(OSError):
                util.write_error(conn.sock, *error)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, deadline in self._awaiting_headers.items() if deadline <= now]:
            # A connection that sent nothing is closed silently, like an idle keep-alive one.
            started = bool(conn.header_bytes)
            timeout = (408, "Request Timeout", "The request's headers did not arrive in time.")
            self._drop_waiting(conn, timeout if started else None)

    # -- bounded body reads and response writes -------------------------------------------------
    def handle_request(self, req: Any, conn: Any) -> Any:
        conn.sock.settimeout(IO_TIMEOUT)
        return super().handle_request(req, conn)
