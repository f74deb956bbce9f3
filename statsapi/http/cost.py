"""What a write costs, counted from its raw body before anything parses it.

The request gate charges a write's cost in its one round trip, before the view runs, so
the count cannot wait for the view's parse. It is a few C-speed passes over the bytes
(bounded by ``MAX_CONTENT_LENGTH``; about 1 ms for a 1000-record body, near one parse),
and only on routes that create records:

1. drop escaped backslashes, then escaped quotes: every quote left opens or closes a string;
2. split on quotes: the even pieces are what lies outside strings, so braces inside text
   never count;
3. count the objects in those pieces, less the outer one.

For a valid batch that is exactly its number of records (each is one object). Anything
else costs what it appears to hold, at least 1 and at most ``limit``, and then fails in
the view with its 400 or 422, having written nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Request


def objects_inside(body: bytes) -> int:
    """How many JSON objects ``body``'s outer object contains, at any depth."""
    stripped = body.strip()
    if not stripped.startswith(b"{"):
        return 0
    unescaped = stripped.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    return max(outside_strings.count(b"{") - 1, 0)


def records_in_body(limit: int) -> Callable[[Request], int]:
    """The cost of a batch: its records, counted in the raw body, between 1 and ``limit``."""

    def cost(req: Request) -> int:
        return min(max(objects_inside(req.get_data(cache=True)), 1), limit)

    return cost


def one(_req: Request) -> int:
    return 1
