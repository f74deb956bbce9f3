"""Fields with statsapi's exact wire formats."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

import marshmallow as ma

from ..money import ISO_4217

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})$")


def format_utc(value: dt.datetime) -> str:
    """UTC, ``Z`` suffix, microseconds only when present."""
    text = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    return f"{text}Z"


INT64_MAX = 2**63 - 1


def Id(**kwargs: Any) -> ma.fields.Integer:  # noqa: N802 (a field factory reads like a field class)
    """A database id: positive 64-bit integer."""
    metadata = {"format": "int64", "minimum": 1, "maximum": INT64_MAX, **kwargs.pop("metadata", {})}
    return ma.fields.Integer(metadata=metadata, **kwargs)


def Count(**kwargs: Any) -> ma.fields.Integer:  # noqa: N802
    """A non-negative 64-bit count."""
    metadata = {"format": "int64", "minimum": 0, "maximum": INT64_MAX, **kwargs.pop("metadata", {})}
    return ma.fields.Integer(metadata=metadata, **kwargs)


def Text(max_length: int, **kwargs: Any) -> ma.fields.String:  # noqa: N802
    """An output string with its documented maximum length."""
    metadata = {"maxLength": max_length, **kwargs.pop("metadata", {})}
    return ma.fields.String(metadata=metadata, **kwargs)


class RFC3339DateTime(ma.fields.Field):
    """RFC 3339 date-time with an explicit offset; naive values are rejected."""

    default_error_messages = {
        "invalid": "Not an RFC 3339 date-time with an offset (e.g. 2026-01-31T09:30:00Z).",
        "range": "Date-time out of range.",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {})
        kwargs["metadata"] = {"type": "string", "format": "date-time", "maxLength": 35, **kwargs["metadata"]}
        super().__init__(**kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_utc(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str) or not _RFC3339.match(value):
            raise self.make_error("invalid")
        try:
            parsed = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            raise self.make_error("invalid") from None
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:
            raise self.make_error("range") from None


class DecimalString(ma.fields.String):
    """A money amount as a JSON string (``"-12.50"``); numbers are refused."""

    default_error_messages = {
        "invalid": 'Must be a JSON string such as "-12.50" (numbers are refused: floats lose cents).',
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {
            "type": "string",
            "pattern": r"^-?(0|[1-9][0-9]{0,12})(\.[0-9]{1,4})?$",
            "maxLength": 19,
            "example": "-12.50",
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)


class CurrencyCode(ma.fields.String):
    default_error_messages = {
        "unknown": "Must be an upper-case ISO 4217 currency code such as USD, EUR or JPY.",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {
            "pattern": "^[A-Z]{3}$",
            "minLength": 3,
            "maxLength": 3,
            "example": "EUR",
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs)
        if code not in ISO_4217:
            raise self.make_error("unknown")
        return code


class CleanText(ma.fields.String):
    """Text with surrounding whitespace trimmed and no control characters."""

    default_error_messages = {"control": "Must not contain control characters."}

    def __init__(self, *, trim: bool = True, **kwargs: Any) -> None:
        self.trim = trim
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.trim:
            text = text.strip()
        if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
            raise self.make_error("control")
        return text


class StrictBoolean(ma.fields.Boolean):
    """Only JSON ``true``/``false``; no ``"yes"``, ``1`` or ``"on"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value
