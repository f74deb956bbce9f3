"""ETags and conditional requests (``If-Match`` → 428/412, ``If-None-Match`` → 304)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flask import Request, request

from ..problems import Problem
from .apidoc import document_header

F = Callable[..., Any]


def version_etag(kind: str, ident: int, version: int) -> str:
    """Strong ETag of a versioned resource, e.g. ``"record-42-v3"``."""
    return f'"{kind}-{ident}-v{version}"'


def content_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _unquote(etag: str) -> str:
    return etag.strip('"')


# Conditional headers are bounded like every other input (and documented so).
MAX_CONDITIONAL_HEADER = 1024


def _conditional_header(name: str, req: Request | None = None) -> str:
    """The header's value ("" when absent); one longer than documented is a 422."""
    value = (req or request).headers.get(name, "")
    if len(value) > MAX_CONDITIONAL_HEADER:
        raise Problem(
            422,
            "The request failed validation.",
            slug="validation-error",
            errors={name: [f"At most {MAX_CONDITIONAL_HEADER} characters."]},
        )
    return value


def require_if_match(current: str, *, required: bool = True) -> None:
    """428 without ``If-Match`` (when required), 412 when it names another version."""
    if_match = request.if_match
    if not _conditional_header("If-Match"):
        if required:
            raise Problem(
                428,
                "Send If-Match with the ETag from your last read of this resource.",
                slug="precondition-required",
            )
        return
    if if_match.star_tag or if_match.contains(_unquote(current)):
        return
    raise Problem(
        412,
        "If-Match does not match the current ETag: the resource changed since you read it.",
        slug="precondition-failed",
        headers={"ETag": current},
    )


def not_modified(current: str, req: Request) -> bool:
    if not _conditional_header("If-None-Match", req):
        return False  # the common case: nothing to parse
    if_none_match = req.if_none_match
    return if_none_match.star_tag or if_none_match.contains_weak(_unquote(current))


def documents_if_match(*, required: bool) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        return document_header(
            func,
            {
                "in": "header",
                "name": "If-Match",
                "required": required,
                # Required: an empty value counts as none (428), so it is not a valid value.
                "schema": {"type": "string", "maxLength": MAX_CONDITIONAL_HEADER}
                | ({"minLength": 1} if required else {}),
                "description": "The ETag from your last read; a stale one gets 412"
                + (", none gets 428." if required else "."),
            },
            (412, 422, 428) if required else (412, 422),
        )

    return decorator


def documents_if_none_match(func: F) -> F:
    return document_header(
        func,
        {
            "in": "header",
            "name": "If-None-Match",
            "required": False,
            "schema": {"type": "string", "maxLength": MAX_CONDITIONAL_HEADER},
            "description": "An ETag you hold; 304 Not Modified when it is still current.",
        },
        (304, 422),
    )


ETAG_HEADER = {
    "ETag": {
        "description": "Entity tag of this representation.",
        "schema": {"type": "string", "maxLength": 128, "pattern": '^"[A-Za-z0-9-]+"$'},
    }
}
LOCATION_HEADER = {
    "Location": {
        "description": "URL of the created resource.",
        "schema": {"type": "string", "format": "uri-reference", "maxLength": 2048},
    }
}
