"""Every error source, answered as RFC 9457 problem+json through one renderer.

A ``Problem`` (``statsapi.problems``) is rendered as it is. Everything else is first
mapped to a problem here, in one place each: werkzeug's HTTP errors (404, 405 + ``Allow``,
413, 415, ...), webargs validation (422 with field errors), the database (503 when it is
unreachable or too slow, 409 on a constraint) and anything unhandled (500, no internals).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from ..db import NOT_MIGRATED_KIND, classify_failure
from ..metrics import AUTH_FAILURES
from ..problems import PROBLEM_MEDIA_TYPE, VALIDATION_FAILED, Problem, Unavailable, problem_type
from .transaction import database

log = logging.getLogger(__name__)

DB_RETRY_AFTER_SECONDS = 5
_QUERY_CANCELED = "57014"  # SQLSTATE of a statement cancelled by statement_timeout

_DETAILS = {
    400: "The request could not be understood (for example, malformed JSON).",
    404: "No resource exists at this URL.",
    413: "The request body is too large.",
    415: "The request body must be JSON (Content-Type: application/json).",
}


def render(problem: Problem) -> Response:
    """The problem+json response for ``problem``: the only place one is built."""
    if problem.auth_failure:
        AUTH_FAILURES.labels(reason=problem.auth_failure).inc()
    body: dict[str, Any] = {
        "type": problem_type(problem.slug),
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path,
    }
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extensions)
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_MEDIA_TYPE)
    response.headers.update(problem.headers)
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
    if not isinstance(messages, Mapping):
        return flatten_errors(messages)
    # Drop webargs' location level ("json", "query", "headers"): field names are unique.
    merged: dict[str, list[str]] = {}
    for location, fields in messages.items():
        if location in {"json", "query", "querystring", "headers", "view_args", "form"}:
            merged.update(flatten_errors(fields))
        else:
            merged.update(flatten_errors({location: fields}))
    return merged


def from_http_exception(error: HTTPException) -> Problem:
    """werkzeug's errors (routing, size limits, webargs' 422) as problems."""
    status = error.code or 500
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    data = getattr(error, "data", None) or {}
    headers.update(data.get("headers") or {})
    if status == 422:
        errors = _webargs_errors(data)
        return Problem(422, VALIDATION_FAILED, slug="validation-error", errors=errors, headers=headers)
    if status == 405:
        detail = f"{request.method} is not allowed here; allowed: {headers.get('Allow', 'none')}."
    elif status >= 500:
        detail = "An unexpected error occurred; it has been logged." if status == 500 else ""
    else:
        detail = data.get("message") or _DETAILS.get(status) or error.description or ""
    return Problem(status, detail, headers=headers)


def _is_connection_failure(error: DBAPIError | PoolTimeoutError) -> bool:
    """Down for real: no connection, a dropped one, or no pool slot in time."""
    if isinstance(error, PoolTimeoutError) or getattr(error, "connection_invalidated", False):
        return True
    # psycopg2 raises connection failures as OperationalError without a SQLSTATE.
    orig = getattr(error, "orig", None)
    return isinstance(error, OperationalError) and getattr(orig, "pgcode", "") is None


def from_database_error(error: DBAPIError | PoolTimeoutError) -> Problem:
    """503 + Retry-After, never a 500: nothing was written (the transaction rolled back)."""
    kind, reason = classify_failure(error)
    if kind == NOT_MIGRATED_KIND:
        log.error("database: %s", reason)
        detail = "The database schema is not migrated: run `flask --app statsapi db upgrade`."
    elif _is_connection_failure(error):
        database().health.failed(error)
        detail = "The database is unavailable; the request was not processed."
    elif getattr(getattr(error, "orig", None), "pgcode", None) == _QUERY_CANCELED:
        log.warning("query cancelled by statement_timeout")
        detail = "The query took too long and was cancelled; narrow it or retry later."
    else:
        log.warning("database busy: %s", getattr(error, "orig", error).__class__.__name__)
        detail = "The database could not process the request right now; retry later."
    return Unavailable(detail, retry_after=DB_RETRY_AFTER_SECONDS)


def to_problem(error: Exception) -> Problem:
    """Any exception a request can end with, as the problem the client is told."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, HTTPException):
        return from_http_exception(error)
    if isinstance(error, IntegrityError):
        log.warning("integrity error: %s", error.orig.__class__.__name__)
        return Problem(
            409, "The request conflicts with existing data or a database constraint.", slug="conflict"
        )
    # A missing table is an operator's step not taken (migrations), not a bug: 503, not 500.
    if isinstance(error, OperationalError | PoolTimeoutError) or (
        isinstance(error, DBAPIError)
        and (error.connection_invalidated or classify_failure(error)[0] == NOT_MIGRATED_KIND)
    ):
        return from_database_error(error)
    log.exception("unhandled exception", exc_info=error)
    return Problem(500, "An unexpected error occurred; it has been logged.")


def handle(error: Exception) -> Response:
    return render(to_problem(error))


def init_app(app: Flask) -> None:
    # One handler for everything: Flask picks it for any exception a request raises.
    app.register_error_handler(Exception, handle)
    app.register_error_handler(HTTPException, handle)
