"""gunicorn's ``gthread`` worker, hardened for running without a buffering proxy in front
(Render, ``docker run``): ``worker_class = "statsapi.gunicorn_worker.ThreadWorker"``.

* **Requests are read by the worker's event loop, not by a thread.** Stock gthread hands a
  connection to a thread as soon as its first byte arrives, and that thread then blocks
  until the headers are complete: 24 clients dripping one byte every 2 s hold every thread
  of every worker and ``/health`` stops answering. Here a connection only reaches the
  thread pool once its whole header block is buffered, and, for a body of known length up
  to ``MAX_BUFFERED_BODY``, its whole body too, so a slow client costs one socket in the
  poller, never a thread. The header block must arrive within ``GUNICORN_HEADER_TIMEOUT``
  seconds (default 10, like nginx's ``client_header_timeout``) and fit in
  ``MAX_HEADER_BYTES``; such a body within ``GUNICORN_BODY_TIMEOUT`` (default 30);
  otherwise the client gets a 408 / 431 and the connection closes. Threads, psycopg2 and
  the app see exactly what they saw before: the same thread pool runs the same WSGI calls.
* **Body reads and response writes are bounded**: each socket operation of a request gives
  up after ``GUNICORN_IO_TIMEOUT`` seconds without progress (default 10, like nginx's
  ``client_body_timeout``), so a client that stops sending or reading frees its thread.
* **Responses**: no ``Server`` header (no product or version banner), and a
  ``Connection: close`` from the app (``statsapi.http.edge.BodyGuard`` sets it when a body was
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
# A body of known length up to this size is also awaited in the event loop, within
# GUNICORN_BODY_TIMEOUT, while all such bodies of the worker together stay under the budget
# (beyond it, threads read bodies as stock gthread does).
BODY_TIMEOUT = _seconds("GUNICORN_BODY_TIMEOUT", 30.0)
MAX_BUFFERED_BODY = 1024 * 1024
BODY_BUFFER_BUDGET = 64 * 1024 * 1024
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
    return _header_end(data) is not None


def _header_end(data: bytes | bytearray) -> int | None:
    """Where the body starts, once the blank line ending the header block has arrived."""
    ends = [(found + len(end)) for end in _HEADER_ENDS if (found := data.find(end)) >= 0]
    return min(ends) if ends else None


def _small_body_length(header_block: bytes) -> int | None:
    """The body size to wait for before a thread takes the request, or None to let a thread
    read it as usual: chunked or ambiguous framing, ``Expect: 100-continue`` (the client
    waits for our answer first), or a body over ``MAX_BUFFERED_BODY``. gunicorn's parser
    still judges the request; this only decides how long to wait."""
    lengths, streamed = [], False
    for line in header_block.splitlines()[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths.append(value.strip())
        elif name in (b"transfer-encoding", b"expect"):
            streamed = True
    if streamed or len(lengths) != 1 or not lengths[0].isdigit():
        return None
    length = int(lengths[0])
    return length if length <= MAX_BUFFERED_BODY else None


class ThreadWorker(gthread.ThreadWorker):
    def init_process(self) -> None:
        # wsgi.create() looks the class up at each request: every HTTP/1 response of this
        # worker process is ours (HTTP/2 keeps its own class; it is not enabled here).
        wsgi.Response = Response
        # Connections whose request is still arriving, with their deadline.
        self._awaiting: dict[Any, float] = {}
        self._buffered_bodies = 0  # bytes of bodies being waited for, all connections
        super().init_process()

    # -- connections reach the thread pool only with their whole request (or header block) ----
    def enqueue_req(self, conn: Any) -> None:
        if self.cfg.is_ssl or conn.is_http2:
            super().enqueue_req(conn)  # TLS handshakes and HTTP/2 keep gthread's own path
            return
        if conn.parser is not None and _headers_complete(conn.parser.unreader.buf.getvalue()):
            super().enqueue_req(conn)  # pipelined: the next request is already buffered
            return
        if conn.parser is None:
            conn.init()  # plain HTTP/1: only builds the parser, reads nothing
        conn.pending = bytearray(conn.parser.unreader.take_buffered())
        conn.body_end = None  # where the request ends, once a small body is awaited
        conn.body_reserved = 0
        conn.sock.setblocking(False)
        self._awaiting[conn] = time.monotonic() + HEADER_TIMEOUT
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_request, conn))

    def _read_request(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop_waiting(conn)
            return
        conn.pending += data
        if conn.body_end is not None:
            if len(conn.pending) >= conn.body_end:
                self._dispatch(conn)
            return
        header_end = _header_end(conn.pending)
        if header_end is None:
            if len(conn.pending) > MAX_HEADER_BYTES:
                self._drop_waiting(
                    conn, (431, "Request Header Fields Too Large", "The request's header block is too large.")
                )
            return
        body = _small_body_length(bytes(conn.pending[:header_end]))
        if body and self._buffered_bodies + body <= BODY_BUFFER_BUDGET:
            # Wait for a small body here too, so a client that drips it holds no thread.
            conn.body_end = header_end + body
            conn.body_reserved = body
            self._buffered_bodies += body
            self._awaiting[conn] = time.monotonic() + BODY_TIMEOUT
        if conn.body_end is None or len(conn.pending) >= conn.body_end:
            self._dispatch(conn)

    def _dispatch(self, conn: Any) -> None:
        self._stop_waiting(conn)
        conn.parser.unreader.unread(bytes(conn.pending))
        conn.pending = None
        conn.data_ready = True
        conn.sock.setblocking(True)
        super().enqueue_req(conn)

    def _stop_waiting(self, conn: Any) -> None:
        del self._awaiting[conn]
        self._buffered_bodies -= conn.body_reserved
        conn.body_reserved = 0
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
        for conn in [c for c, deadline in self._awaiting.items() if deadline <= now]:
            # A connection that sent nothing is closed silently, like an idle keep-alive one.
            started = bool(conn.pending)
            timeout = (408, "Request Timeout", "The request did not arrive in time.")
            self._drop_waiting(conn, timeout if started else None)

    # -- bounded body reads and response writes -------------------------------------------------
    def handle_request(self, req: Any, conn: Any) -> Any:
        conn.sock.settimeout(IO_TIMEOUT)
        return super().handle_request(req, conn)
