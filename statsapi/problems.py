"""The one way statsapi makes an error: raise a ``Problem`` (RFC 9457).

Flask-free on purpose: services raise these too, and ``http.errors`` renders every
problem (and every other error source, mapped to a problem) as ``application/problem+json``.

Problem types are relative URIs ``/problems/<slug>``, served by ``GET /problems/<slug>``
with the description below; a problem without a slug is ``about:blank`` (RFC 9457 §4.2.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
VALIDATION_FAILED = "The request failed validation."

PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "validation-error": (
        "Validation error",
        "The request's parameters or body failed validation; see `errors`.",
    ),
    "invalid-credentials": (
        "Invalid credentials",
        "The username or password is incorrect, or the account is deactivated (the same answer for each).",
    ),
    "invalid-token": (
        "Invalid token",
        "The bearer token is missing, malformed, expired, revoked or of the wrong type.",
    ),
    "forbidden": ("Forbidden", "The token is valid but its role does not allow this operation."),
    "rate-limited": ("Too many requests", "A rate limit was exceeded; retry after `Retry-After` seconds."),
    "quota-exceeded": (
        "Quota exceeded",
        "A daily quota is used up: nothing was written; it resets at the time `detail` and `Retry-After` give.",
    ),
    "precondition-required": (
        "Precondition required",
        "This update needs an `If-Match` header with the resource's current ETag.",
    ),
    "precondition-failed": (
        "Precondition failed",
        "The `If-Match` ETag is stale: the resource changed since it was read.",
    ),
    "idempotency-conflict": (
        "Idempotency key in use",
        "A request with this `Idempotency-Key` is still being processed.",
    ),
    "idempotency-mismatch": (
        "Idempotency key reused",
        "This `Idempotency-Key` was already used with a different request body.",
    ),
    "conflict": ("Conflict", "The request conflicts with the current state of a resource."),
    "service-unavailable": (
        "Service unavailable",
        "A backing service is unreachable; retry after `Retry-After` seconds.",
    ),
    "invalid-cursor": (
        "Invalid cursor",
        "The pagination cursor is malformed, tampered with, or belongs to other filters.",
    ),
    # Generic HTTP errors get a type too, so every `type` an API response carries resolves.
    "bad-request": ("Bad Request", "The request could not be understood, e.g. malformed JSON."),
    "not-found": ("Not Found", "No resource exists at this URL, or it is not visible to you."),
    "method-not-allowed": ("Method Not Allowed", "This URL does not support the method; see `Allow`."),
    "content-too-large": ("Content Too Large", "The request body exceeds the server's size limit."),
    "unsupported-media-type": (
        "Unsupported Media Type",
        "The request body must be JSON (`Content-Type: application/json`), UTF-8 encoded.",
    ),
    # OAuth 2.0 token endpoint (RFC 6749 §5.2): the body also carries `error`, `error_description`.
    "invalid-request": (
        "Invalid token request",
        "The token request lacks a parameter, repeats one, or is not form-encoded (`invalid_request`).",
    ),
    "invalid-grant": (
        "Invalid grant",
        "The username or password is incorrect, or the account is deactivated (`invalid_grant`).",
    ),
    "unsupported-grant-type": (
        "Unsupported grant type",
        "The token endpoint supports `grant_type=password` only (`unsupported_grant_type`).",
    ),
    "internal-error": ("Internal Server Error", "An unexpected error occurred; it has been logged."),
}
# The type of a problem raised without one, by status; other statuses stay about:blank.
STATUS_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "content-too-large",
    415: "unsupported-media-type",
    500: "internal-error",
}


def problem_type(slug: str | None) -> str:
    return f"/problems/{slug}" if slug else "about:blank"


def default_title(status: int, slug: str | None) -> str:
    """The problem type's title, or the status phrase for ``about:blank``."""
    slug = slug or STATUS_SLUGS.get(status)
    if slug in PROBLEM_TYPES:
        return PROBLEM_TYPES[slug][0]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An error answered with RFC 9457 fields; raise it anywhere, HTTP layer or service.

    Subclasses fix the status and type of the errors services raise; ``extensions``
    become extra members of the body (e.g. ``checks`` on a failed readiness probe).
    """

    status = 500
    slug: str | None = None
    auth_failure: str | None = None  # counted as an authentication failure with this reason

    def __init__(
        self,
        status: int | None = None,
        detail: str = "",
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status or type(self).status
        self.detail = detail or default_title(self.status, None)
        self.slug = slug or type(self).slug or STATUS_SLUGS.get(self.status)
        self.title = title or default_title(self.status, self.slug)
        self.errors = errors
        self.headers = dict(headers or {})
        self.extensions = extensions


class NotFound(Problem):
    status = 404

    def __init__(self, detail: str = "No resource exists at this URL.") -> None:
        super().__init__(detail=detail)


class Forbidden(Problem):
    status = 403
    slug = "forbidden"
    auth_failure = "forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class Conflict(Problem):
    status = 409
    slug = "conflict"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class StaleVersion(Problem):
    """Another writer changed the resource since the caller read it."""

    status = 412
    slug = "precondition-failed"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail=detail, **kwargs)


class InvalidInput(Problem):
    """422 with field errors: ``InvalidInput("amount", "Too many decimals.")``."""

    status = 422
    slug = "validation-error"

    def __init__(
        self, field: str | None = None, message: str = "", *, errors: Mapping[str, list[str]] | None = None
    ) -> None:
        super().__init__(detail=VALIDATION_FAILED, errors=errors or {field or "_request": [message]})


class WrongPassword(InvalidInput):
    """The current password, proved again for a sensitive change, is wrong."""

    auth_failure = "bad_password"

    def __init__(self) -> None:
        super().__init__("current_password", "The current password is incorrect.")


class AuthenticationFailed(Problem):
    """Wrong username or password (or a deactivated account): the same 401 for each."""

    status = 401
    slug = "invalid-credentials"
    auth_failure = "bad_credentials"

    def __init__(self, detail: str = "The username or password is incorrect.") -> None:
        super().__init__(detail=detail, headers={"WWW-Authenticate": 'Bearer realm="statsapi"'})


class InvalidToken(Problem):
    """A bearer token that is missing, malformed, expired, revoked or of the wrong type."""

    status = 401
    slug = "invalid-token"

    def __init__(self, detail: str, *, token_sent: bool = True, reason: str = "invalid") -> None:
        safe = detail.replace('"', "'")
        challenge = (
            f'Bearer realm="statsapi", error="invalid_token", error_description="{safe}"'
            if token_sent
            else 'Bearer realm="statsapi"'
        )
        super().__init__(detail=detail, headers={"WWW-Authenticate": challenge})
        self.auth_failure = reason


class RefreshReuse(InvalidToken):
    """A spent refresh token came back: its family is revoked (commit, then 401)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, reason="refresh_reuse")


class Unavailable(Problem):
    """503 + Retry-After: a backing service cannot serve this request now."""

    status = 503
    slug = "service-unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extensions: Any) -> None:
        super().__init__(detail=detail, headers={"Retry-After": str(retry_after)}, **extensions)
