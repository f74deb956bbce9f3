from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow as ma

from ..http.jsonio import UNSAFE_TEXT
from ..http.pagination import DEFAULT_LIMIT, MAX_LIMIT


class StrictSchema(ma.Schema):
    """Unknown fields are errors, in bodies and in query strings alike, and no text value
    may hold NUL or an unpaired surrogate (PostgreSQL cannot store the first, UTF-8 cannot
    encode the second): each such field gets a 422 naming it."""

    class Meta:
        unknown = ma.RAISE

    @ma.pre_load
    def _refuse_unsafe_text(self, data: Any, **_: Any) -> Any:
        if isinstance(data, Mapping):
            bad = {
                str(name): ["Must not contain NUL or unpaired surrogate characters."]
                for name, value in data.items()
                if isinstance(value, str) and UNSAFE_TEXT.search(value)
            }
            if bad:
                raise ma.ValidationError(bad)
        return data


class PageArgsSchema(StrictSchema):
    limit = ma.fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=ma.validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size, 1–{MAX_LIMIT}.", "format": "int32"},
    )
    cursor = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=512),
        metadata={
            "description": "Opaque cursor from the previous page's `next_cursor`.",
            "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
        },
    )


# What a next_cursor looks like (base64url payload, a dot, base64url MAC).
EXAMPLE_CURSOR = "WyIyMDI2LTAzLTE0VDA5OjI2OjUzKzAwOjAwIiw0Ml0.k3Jx9Q2mVb7tYcLw"


def page_schema(item_schema: type[ma.Schema], name: str) -> type[ma.Schema]:
    """``{"items": [...], "next_cursor": str | null}`` around ``item_schema``; its example
    is a page of the item schema's example."""
    item_example = getattr(getattr(item_schema, "Meta", None), "openapi", {}).get("example")
    meta = type(
        "Meta", (), {"openapi": {"example": {"items": [item_example], "next_cursor": EXAMPLE_CURSOR}}}
    )
    return type(
        name,
        (ma.Schema,),
        {
            "Meta": meta,
            "items": ma.fields.List(
                ma.fields.Nested(item_schema), required=True, metadata={"maxItems": MAX_LIMIT}
            ),
            "next_cursor": ma.fields.String(
                required=True,
                allow_none=True,
                metadata={
                    "description": "Pass as `cursor` for the next page; null on the last page.",
                    "maxLength": 512,
                    "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
                },
            ),
        },
    )
