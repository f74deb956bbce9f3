"""Strict JSON input: one parser for every request body.

Refused with ``json.JSONDecodeError`` (a 400 problem), instead of surfacing later as a
500 or as silent data loss:

* invalid UTF-8, and nesting too deep for the parser (``RecursionError``);
* integer literals too long to convert (Python's 4300-digit limit) or longer than
  ``MAX_INTEGER_DIGITS`` — no value in this API needs more;
* duplicate object keys (``{"amount": "1", "amount": "2"}`` must not mean "2").

NUL characters and unpaired surrogates in strings (PostgreSQL cannot store the first,
UTF-8 cannot encode the second) are refused field by field, with a 422 naming the field:
see ``schemas.common.StrictSchema``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_INTEGER_DIGITS = 32
# Characters no text field accepts: NUL and unpaired surrogates.
UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")
# As a JSON Schema pattern: NUL only. Unpaired surrogates cannot appear in a Unicode string
# at all (JSON Schema strings are Unicode), and tools choke on them inside patterns.
SAFE_TEXT_PATTERN = "^[^\\u0000]*$"


class InvalidJSON(json.JSONDecodeError):
    def __init__(self, reason: str) -> None:
        # webargs reads an empty ``doc`` as "no body at all", so it is never empty here.
        super().__init__(reason, "<request body>", 0)


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise InvalidJSON(f"integer literal longer than {MAX_INTEGER_DIGITS} digits")
    return int(literal)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJSON(f"duplicate key {key!r}")
        result[key] = value
    return result


def loads(data: str | bytes) -> Any:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise InvalidJSON("the body is not valid UTF-8") from None
    try:
        document = json.loads(text, parse_int=_parse_int, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise InvalidJSON("nested too deeply") from None
    except InvalidJSON:
        raise
    except ValueError as error:  # JSONDecodeError, and int() refusing huge literals
        raise InvalidJSON(str(error).split(":")[0]) from None
    return document


def try_loads(data: str | bytes) -> Any:
    """The parsed body, or None when it is not acceptable JSON (for best-effort readers)."""
    try:
        return loads(data)
    except json.JSONDecodeError:
        return None


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's ``request.get_json()`` with the same rules as the API's bodies."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)
