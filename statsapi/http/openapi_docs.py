"""What the OpenAPI document shows a reader besides the shapes: the OAuth 2.0 password
flow behind Swagger UI's Authorize dialog, and an example for every problem response.

The examples carry the ``type``, ``title`` and ``status`` the API really answers with, so
"Try it out" and ReDoc show what a client will see.
"""

from __future__ import annotations

from typing import Any

from ..problems import PROBLEM_TYPES, STATUS_SLUGS, default_title, problem_type

TOKEN_URL = "/api/auth/token"  # noqa: S105 (a URL, not a secret)
REFRESH_URL = "/api/auth/refresh"

OAUTH_PASSWORD_SCHEME: dict[str, Any] = {
    "type": "oauth2",
    "description": (
        "Username and password, exchanged at `POST /api/auth/token` (RFC 6749 §4.3, "
        "resource owner password credentials) for the same tokens as `POST /api/auth/login`. "
        "In Swagger UI: **Authorize**, fill in username and password, leave client_id empty. "
        "The tokens are the JWTs of `bearerAuth` (RFC8725 best current practices); refresh them "
        "at `POST /api/auth/refresh` with the refresh token as the bearer."
    ),
    "flows": {"password": {"tokenUrl": TOKEN_URL, "refreshUrl": REFRESH_URL, "scopes": {}}},
}

EXAMPLE_INSTANCE = "/api/records"
EXAMPLE_REQUEST_ID = "5f0c6c1e-8d2a-4b7e-9f1a-3c2d4e5f6a7b"

# (slug, detail, extra members) per status; the first is the `example`, more become `examples`.
_PROBLEMS: dict[int, list[tuple[str, str, dict[str, Any]]]] = {
    400: [("bad-request", "The request body is not acceptable JSON: Expecting value.", {})],
    401: [
        ("invalid-token", "The token has expired.", {}),
        ("invalid-credentials", "The username or password is incorrect.", {}),
    ],
    403: [("forbidden", "Your role (user) may not perform this operation.", {})],
    404: [("not-found", "No resource exists at this URL.", {})],
    405: [("method-not-allowed", "PUT is not allowed here; allowed: GET, PATCH, DELETE.", {})],
    409: [
        ("conflict", "The request conflicts with existing data or a database constraint.", {}),
        ("idempotency-conflict", "A request with this Idempotency-Key is still being processed.", {}),
    ],
    412: [
        (
            "precondition-failed",
            "If-Match does not match the current ETag: the resource changed since you read it.",
            {},
        )
    ],
    413: [("content-too-large", "The request body is too large.", {})],
    415: [("unsupported-media-type", "The request body must be JSON (Content-Type: application/json).", {})],
    422: [
        (
            "validation-error",
            "The request failed validation.",
            {
                "errors": {
                    "currency": ["Must be an upper-case ISO 4217 currency code such as USD, EUR or JPY."]
                }
            },
        )
    ],
    428: [
        (
            "precondition-required",
            "Send If-Match with the ETag from your last read of this resource.",
            {},
        )
    ],
    429: [
        ("rate-limited", "Rate limit exceeded: 300 per 1 minute.", {}),
        (
            "quota-exceeded",
            "Daily record quota exceeded: 100000 records per day (records-day); this request would create "
            "1000 and 400 are left today. Nothing was written; the quota resets at 2026-03-02T00:00:00Z.",
            {},
        ),
    ],
    500: [("internal-error", "An unexpected error occurred; it has been logged.", {})],
    503: [("service-unavailable", "The database is unavailable; the request was not processed.", {})],
}


def problem_example(
    status: int, slug: str | None, detail: str, instance: str = EXAMPLE_INSTANCE, **members: Any
) -> dict[str, Any]:
    """A problem body as ``errors.problem_response`` writes it."""
    slug = slug or STATUS_SLUGS.get(status)
    return {
        "type": problem_type(slug) if slug in PROBLEM_TYPES else "about:blank",
        "title": default_title(status, slug),
        "status": status,
        "detail": detail,
        "instance": instance,
        **members,
        "request_id": EXAMPLE_REQUEST_ID,
    }


def problem_examples(status: int) -> dict[str, Any]:
    """``{"example": ...}`` or ``{"examples": {...}}`` for a media type object."""
    cases = _PROBLEMS.get(status)
    if not cases:
        return {"example": problem_example(status, None, default_title(status, None))}
    if len(cases) == 1:
        slug, detail, members = cases[0]
        return {"example": problem_example(status, slug, detail, **members)}
    return {
        "examples": {
            slug: {
                "summary": PROBLEM_TYPES[slug][0],
                "value": problem_example(status, slug, detail, **members),
            }
            for slug, detail, members in cases
        }
    }
