"""Fields with statsapi's exact wire formats."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

import marshmallow as ma

from ..clock import format_utc
from ..money import ISO_4217, MAX_INTEGER_DIGITS

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})$")


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
    """A money amount as a JSON string (``"-12.50"``); numbers are refused.

    The documented pattern is checked on load, so a malformed amount is a 422 before any
    precondition or currency rule is looked at. Sums may have more integer digits than
    one amount (``integer_digits``).
    """

    default_error_messages = {
        "invalid": 'Must be a JSON string such as "-12.50" (numbers are refused: floats lose cents).',
        "format": 'Must be a decimal string such as "-12.50": an optional minus, at most {digits} '
        "integer digits without leading zeros, at most 4 decimals, no exponent.",
    }

    def __init__(self, *, integer_digits: int = MAX_INTEGER_DIGITS, **kwargs: Any) -> None:
        self.integer_digits = integer_digits
        self.pattern = re.compile(rf"^-?(0|[1-9][0-9]{{0,{integer_digits - 1}}})(\.[0-9]{{1,4}})?$")
        metadata = {
            "type": "string",
            "pattern": self.pattern.pattern,
            "maxLength": integer_digits + 6,  # sign, point and 4 decimals
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not self.pattern.fullmatch(text):
            raise self.make_error("format", digits=self.integer_digits)
        return text


class CurrencyCode(ma.fields.String):
    default_error_messages = {
        "unknown": "Must be an upper-case ISO 4217 currency code such as USD, EUR or JPY.",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {
            "pattern": "^[A-Z]{3}$",
            # The codes the API knows (SPEC §3), so clients and generators see them all.
            "enum": sorted(ISO_4217),
            "minLength": 3,
            "maxLength": 3,
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs)
        if code not in ISO_4217:
            raise self.make_error("unknown")
        return code


# What CleanText accepts, as JSON Schema patterns that read the same in ECMA-262 and in
# Python's re (schemathesis, hypothesis): whitespace is what str.strip() removes; control
# characters are Unicode category Cc except tab and newline; invisible format characters are
# category Cf (below).
_UNICODE_SPACE = "\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000"
_SPACE = f"\\u0009-\\u000D\\u001C-\\u0020\\u0085\\u00A0{_UNICODE_SPACE}"
_CONTROL = "\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F"
_SPACE_OR_CONTROL = f"\\u0000-\\u0020\\u007F-\\u00A0{_UNICODE_SPACE}"
# Unicode category Cc is exactly these (fixed by Unicode's stability policy): one regex
# search instead of a category lookup per character.
_CONTROL_CHARACTER = re.compile(f"[{_CONTROL}]")

# Unicode category Cf (format characters) as of Unicode 14, Python 3.11's table: invisible
# characters that change how the text around them is shown. Bidi embeddings, overrides and
# isolates (U+202A-202E, U+2066-2069) can make "fee" display as "eef" or hide a part of the
# text in a log, a spreadsheet or an admin screen; zero-width characters (U+200B-200D, U+2060,
# U+FEFF) make two categories look equal while they group apart. Frozen here (not read from the
# running Python's table) so the documented pattern does not change with the interpreter;
# tests/test_text_safety.py fails when a newer Python knows Cf characters this table lacks.
FORMAT_CHARACTERS = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
# One regular expression for everything refused: a C-speed scan (a 1000-record batch is
# up to half a million characters; a Python loop over them cost ~0.3 s).
_REFUSED = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    + "".join(f"{chr(low)}-{chr(high)}" for low, high in FORMAT_CHARACTERS)
    + "]"
)
# Only the Basic Multilingual Plane goes into the documented pattern: ECMA-262 without the
# "u" flag reads an astral character as two surrogates, so a range of them is a syntax error
# there, and no pattern valid there can name one for a tool that reads code points. The astral
# ones (tag characters, musical and hieroglyph format controls) are named in the field's
# description instead, and refused all the same.
_FORMAT_PATTERN = "".join(
    f"\\u{low:04X}" if low == high else f"\\u{low:04X}-\\u{high:04X}"
    for low, high in FORMAT_CHARACTERS
    if high <= 0xFFFF
)
_UNSAFE = _CONTROL + _FORMAT_PATTERN
_UNSAFE_OR_SPACE = _SPACE_OR_CONTROL + _FORMAT_PATTERN
TEXT_RULES = (
    "Normalised to Unicode NFC. Control characters (except tab and newline) and invisible format "
    "characters (Unicode category Cf: bidi controls, zero-width characters, tag characters, ...) "
    "are refused."
)


def _clean_text_pattern(*, trim: bool, non_blank: bool) -> str:
    if not trim:
        return f"^[^{_UNSAFE}]*$"
    # Optional padding, then text that starts and ends with a visible character.
    core = f"[^{_UNSAFE_OR_SPACE}]([^{_UNSAFE}]*[^{_UNSAFE_OR_SPACE}])?"
    return f"^[{_SPACE}]*{core if non_blank else f'({core})?'}[{_SPACE}]*$"


class CleanText(ma.fields.String):
    """Text safe to show a person: NFC-normalised, surrounding whitespace trimmed, no control
    characters, no invisible format characters (category Cf, see ``FORMAT_CHARACTERS``)."""

    default_error_messages = {
        "control": "Must not contain control characters.",
        "format": "Must not contain invisible format characters (U+{code:04X} {name}): "
        "bidi controls, zero-width characters and other Unicode category Cf characters are refused.",
        "too_long": "Longer than maximum length {max}.",
    }

    def __init__(self, *, trim: bool = True, **kwargs: Any) -> None:
        self.trim = trim
        validators = kwargs.get("validate") or []
        if not isinstance(validators, list | tuple):
            validators = [validators]
        lengths = [v for v in validators if isinstance(v, ma.validate.Length)]
        non_blank = any((v.min or 0) >= 1 for v in lengths)
        # The documented maxLength bounds what is sent, padding included; the Length
        # validator then bounds the trimmed, normalised text.
        self.raw_max = min((v.max for v in lengths if v.max is not None), default=None)
        metadata = dict(kwargs.get("metadata", {}))
        metadata["description"] = " ".join(filter(None, (metadata.get("description"), TEXT_RULES)))
        kwargs["metadata"] = {"pattern": _clean_text_pattern(trim=trim, non_blank=non_blank), **metadata}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.raw_max is not None and len(text) > self.raw_max:
            raise self.make_error("too_long", max=self.raw_max)
        # One spelling per text: "é" precomposed or as e + U+0301 is stored (and filtered,
        # grouped, compared) the same way.
        text = unicodedata.normalize("NFC", text)
        if self.trim:
            text = text.strip()
        refused = _REFUSED.search(text)
        if refused is not None:
            ch = refused.group()
            if unicodedata.category(ch) == "Cc":
                raise self.make_error("control")
            raise self.make_error("format", code=ord(ch), name=unicodedata.name(ch, "format character"))
        return text


class StrictBoolean(ma.fields.Boolean):
    """Only JSON ``true``/``false``; no ``"yes"``, ``1`` or ``"on"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value
