"""Domain errors raised by services; ``statsapi.http.errors`` maps them to problem responses."""

from __future__ import annotations

from collections.abc import Mapping


class DomainError(Exception):
    status = 400
    slug: str | None = None

    def __init__(self, detail: str, *, errors: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFound(DomainError):
    status = 404


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"


class Conflict(DomainError):
    status = 409
    slug = "conflict"


class StaleVersion(DomainError):
    """Another writer changed the resource since the caller read it."""

    status = 412
    slug = "precondition-failed"


class InvalidInput(DomainError):
    status = 422
    slug = "validation-error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__("The request failed validation.", errors={field: [message]})


class AuthenticationFailed(DomainError):
    status = 401
    slug = "invalid-credentials"


class RefreshReuse(AuthenticationFailed):
    """A spent refresh token came back: its family is revoked (commit, then 401)."""

    slug = "invalid-token"
