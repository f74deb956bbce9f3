"""A response as plain status, headers and body.

The request gate answers a cached read itself, before Flask dispatches anything, and the
view answers the same read when the cache could not. Both build the answer with the same
function, as a ``Reply``: the gate sends it as it is, the view hands Flask its
``to_response()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Response
from werkzeug.http import HTTP_STATUS_CODES


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def to_response(self) -> Response:
        return Response(self.body or None, status=self.status, headers=list(self.headers))

    def send(self, start_response: Callable[..., Any], method: str) -> Iterable[bytes]:
        """The WSGI answer; a HEAD request gets the headers only (Content-Length included)."""
        start_response(f"{self.status} {HTTP_STATUS_CODES[self.status]}", list(self.headers))
        return [] if method == "HEAD" else [self.body]
