"""Time: now in UTC, and the one way statsapi writes a timestamp."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_utc(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; microseconds only when present."""
    return f"{value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()}Z"
