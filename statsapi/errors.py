"""RFC 9457 problem details for every error, whatever raised it.

Sources handled here: ``abort()`` and werkzeug's HTTP errors (404, 405 + ``Allow``, 413,
415, ...), webargs validation (422 with field errors), the rate limiter (429), the
database (503 when unreachable, 409 on a constraint) and anything unhandled (500, with
no internals). flask-jwt-extended's errors are turned into problems by its loaders in
``security.py`` through :func:`problem_response`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, g, json, request
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
DB_RETRY_AFTER_SECONDS = 5

# Problem types specific to statsapi; anything else is "about:blank" (RFC 9457 §4.2.1).
# The URIs are relative references, resolved against the API's own base URL, and are
# served by GET /problems/<slug> with the description below.
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


def problem_type(slug: str) -> str:
    return f"/problems/{slug}"


class Problem(HTTPException):
    """An HTTP error carrying RFC 9457 fields; raise it anywhere in a request."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(description=detail)
        self.code = status
        self.slug = slug
        self.title = title or default_title(status, slug)
        self.errors = errors
        self.extra_headers = dict(headers or {})
        self.extensions = extensions


def default_title(status: int, slug: str | None) -> str:
    """The problem type's title, or the status phrase for ``about:blank``."""
    slug = slug or STATUS_SLUGS.get(status)
    return PROBLEM_TYPES[slug][0] if slug in PROBLEM_TYPES else _phrase(status)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    slug = slug or STATUS_SLUGS.get(status)
    body: dict[str, Any] = {
        "type": problem_type(slug) if slug else "about:blank",
        "title": title or default_title(status, slug),
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    if errors:
        body["errors"] = errors
    body.update(extensions)
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{"json": {"records": {0: {"amount": ["bad"]}}}}`` → ``{"records.0.amount": ["bad"]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, path))
    elif isinstance(messages, list | tuple) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_request"] = [str(m) for m in messages]
    elif isinstance(messages, list | tuple):
        for index, value in enumerate(messages):
            flat.update(flatten_errors(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        flat[prefix or "_request"] = [str(messages)]
    return flat


def _webargs_errors(data: Mapping[str, Any]) -> dict[str, list[str]]:
    messages = data.get("messages") or data.get("errors") or {}
    if isinstance(messages, Mapping):
        # Drop webargs' location level ("json", "query", "headers"): field names are unique.
        merged: dict[str, list[str]] = {}
        for location, fields in messages.items():
            if location in {"json", "query", "querystring", "headers", "view_args", "form"}:
                merged.update(flatten_errors(fields))
            else:
                merged.update(flatten_errors({location: fields}))
        return merged
    return flatten_errors(messages)


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    if isinstance(error, Problem):
        headers.update(error.extra_headers)
        return problem_response(
            status,
            error.description or _phrase(status),
            slug=error.slug,
            title=error.title,
            errors=error.errors,
            headers=headers,
            **error.extensions,
        )
    data = getattr(error, "data", None) or {}
    if status == 422:
        return problem_response(
            422,
            "The request failed validation.",
            slug="validation-error",
            errors=_webargs_errors(data),
            headers=headers,
        )
    if status == 429:
        return problem_response(
            429,
            f"Rate limit exceeded: {error.description}.",
            slug="rate-limited",
            headers=headers,
        )
    if status >= 500:
        detail = "An unexpected error occurred; it has been logged." if status == 500 else _phrase(status)
    else:
        detail = data.get("message") or _DETAILS.get(status) or error.description or _phrase(status)
    if status == 405:
        detail = f"{request.method} is not allowed here; allowed: {headers.get('Allow', 'none')}."
    headers.update(data.get("headers") or {})
    return problem_response(status, detail, headers=headers)


_DETAILS = {
    400: "The request could not be understood (for example, malformed JSON).",
    404: "No resource exists at this URL.",
    413: "The request body is too large.",
    415: "The request body must be JSON (Content-Type: application/json).",
}


def handle_integrity_error(error: IntegrityError) -> Response:
    log.warning("integrity error: %s", error.orig.__class__.__name__)
    return problem_response(
        409, "The request conflicts with existing data or a database constraint.", slug="conflict"
    )


# SQLSTATE classes that mean "the server is there but this query could not run now".
_QUERY_CANCELED = "57014"  # statement_timeout


def _is_connection_failure(error: DBAPIError | PoolTimeoutError) -> bool:
    """Down for real: no connection, a dropped one, or no pool slot in time."""
    if isinstance(error, PoolTimeoutError) or getattr(error, "connection_invalidated", False):
        return True
    # psycopg2 raises connection failures as OperationalError without a SQLSTATE.
    orig = getattr(error, "orig", None)
    return isinstance(error, OperationalError) and getattr(orig, "pgcode", "") is None


def handle_database_unavailable(error: DBAPIError | PoolTimeoutError) -> Response:
    """503 + Retry-After, never a 500: nothing was written (the transaction rolled back)."""
    from .db import get_database

    if _is_connection_failure(error):
        get_database().health.failed(error)
        detail = "The database is unavailable; the request was not processed."
    elif getattr(getattr(error, "orig", None), "pgcode", None) == _QUERY_CANCELED:
        log.warning("query cancelled by statement_timeout")
        detail = "The query took too long and was cancelled; narrow it or retry later."
    else:
        log.warning("database busy: %s", getattr(error, "orig", error).__class__.__name__)
        detail = "The database could not process the request right now; retry later."
    return problem_response(
        503, detail, slug="service-unavailable", headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)}
    )


def handle_unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unhandled exception")
    return handle_http_exception(InternalServerError())


def handle_operational_error(error: OperationalError) -> Response:
    return handle_database_unavailable(error)


def handle_dbapi_error(error: DBAPIError) -> Response:
    if error.connection_invalidated:
        return handle_database_unavailable(error)
    return handle_unexpected(error)


def handle_domain_error(error: Exception) -> Response:
    from .services.errors import AuthenticationFailed, DomainError, RefreshReuse

    assert isinstance(error, DomainError)
    headers: dict[str, str] = {}
    if isinstance(error, AuthenticationFailed):
        from .metrics import AUTH_FAILURES

        # RFC 9110 §15.5.2: every 401 carries a challenge.
        if isinstance(error, RefreshReuse):
            AUTH_FAILURES.labels(reason="refresh_reuse").inc()
            headers["WWW-Authenticate"] = 'Bearer realm="statsapi", error="invalid_token"'
        else:
            AUTH_FAILURES.labels(reason="bad_credentials").inc()
            headers["WWW-Authenticate"] = 'Bearer realm="statsapi"'
    return problem_response(error.status, error.detail, slug=error.slug, errors=error.errors, headers=headers)


def init_app(app: Flask) -> None:
    from .services.errors import DomainError

    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(PoolTimeoutError, handle_database_unavailable)
    app.register_error_handler(DBAPIError, handle_dbapi_error)
    app.register_error_handler(Exception, handle_unexpected)
