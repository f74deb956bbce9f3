"""Keyset pagination with opaque, signed cursors.

A cursor names the last row of a page by its sort key (e.g. ``occurred_at, id``) and
carries a digest of the filters it was made for. It is signed, so a tampered or foreign
cursor is a 422, never a surprising page. Page N costs what page 1 costs: the query
seeks past the key with an index instead of counting an OFFSET.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..problems import Problem

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def filters_digest(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest()[:16])

    def encode(self, kind: str, position: Sequence[Any], filters: Mapping[str, Any]) -> str:
        payload = json.dumps(
            {"k": kind, "p": list(position), "f": filters_digest(filters)}, separators=(",", ":")
        ).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def decode(self, cursor: str, kind: str, filters: Mapping[str, Any]) -> list[Any]:
        try:
            body, signature = cursor.split(".", 1)
            payload = _unb64(body)
        except (ValueError, binascii.Error):
            raise _invalid("The cursor is malformed.") from None
        # Compare bytes: compare_digest refuses non-ASCII str, and a cursor is client input.
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise _invalid("The cursor was not issued by this API or was altered.")
        data = json.loads(payload)
        if data.get("k") != kind:
            raise _invalid("The cursor belongs to another list.")
        if data.get("f") != filters_digest(filters):
            raise _invalid("The cursor was issued for other filters; restart without a cursor.")
        position = data.get("p")
        if not isinstance(position, list):
            raise _invalid("The cursor is malformed.")
        return position


def _invalid(detail: str) -> Problem:
    return Problem(422, detail, slug="invalid-cursor", errors={"cursor": [detail]})


def page_body(
    codec: CursorCodec,
    kind: str,
    rows: Sequence[Any],
    *,
    limit: int,
    filters: Mapping[str, Any],
    position: Callable[[Any], list[Any]],
) -> dict[str, Any]:
    """``{"items", "next_cursor"}`` from ``limit + 1`` fetched rows."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return {
        "items": items,
        "next_cursor": codec.encode(kind, position(items[-1]), filters) if more else None,
    }
