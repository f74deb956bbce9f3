"""Request bodies at the edge of the app: a body the app did not read never poisons the
connection, and a chunked body over ``MAX_CONTENT_LENGTH`` is a 413 like any other.

Why this exists:

* An answer given before the body is read (401, 403, 415, 429, 413) leaves the body on the
  socket. gunicorn drains at most 64 KiB of it and then closes the connection, after having
  told the client ``Connection: keep-alive``: the client's next request on that connection
  (or, behind nginx, another client's request on the pooled upstream connection) fails.
  Here the rest of a body within the limit is read and thrown away before the answer goes
  out, so the connection stays usable; a body over the limit (or one that cannot be read
  to its end within ``drain_seconds``) is not read at all and the answer says
  ``Connection: close``, which the server (``statsapi.gunicorn_worker``) and nginx honour.
* Werkzeug reads a body of unknown length (``Transfer-Encoding: chunked``) up to the limit
  and silently stops there, so the app parsed a truncated body (a 400 "Unterminated string",
  or a record stored with 201 whatever followed it). Such a body is read here, at most one
  byte past the limit; one over the limit is presented to the app with its real size, and
  the app's usual ``MAX_CONTENT_LENGTH`` check answers its 413 problem.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_DRAIN_CHUNK = 64 * 1024


class _CountingInput:
    """``wsgi.input`` that remembers how many bytes the app took from it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        self.consumed += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        self.consumed += len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = self._stream.readlines(hint)
        self.consumed += sum(map(len, lines))
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def _declared_length(environ: dict[str, Any]) -> int | None:
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    return int(raw) if raw.isdigit() else None


def _is_chunked(environ: dict[str, Any]) -> bool:
    codings = str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    return "chunked" in (coding.strip() for coding in codings.split(","))


def _read_up_to(stream: IO[bytes], limit: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = stream.read(min(_DRAIN_CHUNK, limit - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


class BodyGuard:
    """WSGI middleware; ``max_body`` is the app's ``MAX_CONTENT_LENGTH``."""

    def __init__(self, app: WSGIApp, max_body: int, *, drain_seconds: float = 5.0) -> None:
        self.app = app
        self.max_body = max_body
        self.drain_seconds = drain_seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        must_close = False
        length = _declared_length(environ)
        # Like Werkzeug, a chunked body's Content-Length (if any) is ignored.
        if _is_chunked(environ) and environ.get("wsgi.input_terminated"):
            body = _read_up_to(environ["wsgi.input"], self.max_body + 1)
            # From here on the body has a known length: Werkzeug ignores Content-Length while
            # Transfer-Encoding says chunked, so that header goes.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input"] = io.BytesIO(body)
            length = len(body)
            # The rest of an over-limit chunked body is still on the socket, of unknown size.
            must_close = length > self.max_body
        if not length:
            return self.app(environ, start_response)

        counting = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counting

        def start_response_after_body(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if must_close or not self._drain(counting, length):
                headers = [(k, v) for k, v in headers if k.lower() != "connection"]
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        return self.app(environ, start_response_after_body)

    def _drain(self, counting: _CountingInput, length: int) -> bool:
        """Read what is left of a body within the limit; False when the connection must close."""
        left = length - counting.consumed
        if left <= 0:
            return True
        if length > self.max_body:
            return False
        deadline = time.monotonic() + self.drain_seconds
        try:
            while left > 0:
                if time.monotonic() > deadline:
                    return False
                chunk = counting.read(min(_DRAIN_CHUNK, left))
                if not chunk:
                    return False
                left -= len(chunk)
        except OSError:  # the client went away, or a read timed out
            return False
        return True
