"""flask-smorest with statsapi's house rules, added once.

* ``Api``: problem+json for every documented error, the bearer security scheme, the
  rate-limit headers as reusable components; docs are served by ``resources.docs``.
* ``Blueprint``:
  - ``auth_required(*roles)`` authenticates, authorises and documents 401/403 and the
    security requirement in one decorator;
  - ``response`` commits the request's unit of work after the body is built, so a view
    never forgets to and an error never half-writes;
  - every operation documents its 429 and the rate-limit headers, unless exempt;
  - query strings and bodies reject unknown fields (422), bodies must be JSON (415).
"""

from __future__ import annotations

import functools
import http
from collections.abc import Callable
from copy import deepcopy
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Response, g
from webargs.flaskparser import FlaskParser, is_json_request

from . import db
from .errors import PROBLEM_MEDIA_TYPE, Problem
from .models import Role

F = Callable[..., Any]

BEARER_SCHEME = "bearerAuth"

RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": 'Quota policies that apply (IETF draft), e.g. `"user-minute";q=300;w=60`.',
    "RateLimit": 'Remaining quota and seconds to reset (IETF draft), e.g. `"user-minute";r=299;t=42`.',
    "X-RateLimit-Limit": "Requests allowed in the current window.",
    "X-RateLimit-Remaining": "Requests left in the current window.",
    "X-RateLimit-Reset": "Unix time at which the current window resets.",
}


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(
        required=True, metadata={"description": "URI reference identifying the problem type."}
    )
    title = ma.fields.String(required=True, metadata={"description": "Short summary of the problem type."})
    status = ma.fields.Integer(required=True, metadata={"description": "HTTP status code."})
    detail = ma.fields.String(
        required=True, metadata={"description": "Explanation specific to this occurrence."}
    )
    instance = ma.fields.String(metadata={"description": "The request path."})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "Field errors: dotted field path → messages."},
    )
    request_id = ma.fields.String(metadata={"description": "Correlates with the server's logs."})


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema
    DEFAULT_ERROR_RESPONSE_NAME = None  # operations list their real errors instead

    def _register_error_handlers(self) -> None:
        """``errors.init_app`` owns error handling (RFC 9457 for every source)."""

    def _register_doc_blueprint(self) -> None:
        """``resources.docs`` serves the spec and the UIs from local assets."""

    def _register_pagination_header(self) -> None:
        """Keyset pages carry their cursor in the body; no pagination header."""

    def _register_etag_headers(self) -> None:
        """``conditional.py`` documents the conditional headers it implements."""

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ProblemSchema}}
                headers = _ERROR_HEADERS.get(int(status))
                if headers:
                    response["headers"] = headers
            self.spec.components.response(status.name, response, lazy=True)

    def _init_spec(self, **kwargs: Any) -> None:
        super()._init_spec(**kwargs)  # registers ProblemSchema as "Problem" via the responses
        self.spec.components.security_scheme(
            BEARER_SCHEME,
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Access token from `POST /api/auth/login` (refresh tokens are refused).",
            },
        )
        for name, description in RATE_LIMIT_HEADERS.items():
            self.spec.components.header(
                name, {"description": description, "schema": {"type": "string"}}, lazy=True
            )


_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'Bearer challenge; `error="invalid_token"` when a token was sent.',
            "schema": {"type": "string"},
        }
    },
    405: {"Allow": {"description": "Methods this URL supports.", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
        **{name: {"$ref": f"#/components/headers/{name}"} for name in RATE_LIMIT_HEADERS},
    },
    503: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
}


class StrictParser(FlaskParser):
    """webargs parser: unknown query parameters are errors; bodies must be JSON."""

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }

    def load_json(self, req: Any, schema: ma.Schema) -> Any:
        if (req.content_length or req.headers.get("Transfer-Encoding")) and not is_json_request(req):
            raise Problem(
                415,
                "The request body must be JSON (Content-Type: application/json).",
                headers={"Accept-Post": "application/json"},
            )
        return super().load_json(req, schema)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._prepare_rate_limit_doc)

    # -- unit of work ---------------------------------------------------------------
    def response(self, status_code: int, schema: Any = None, **kwargs: Any) -> Callable[[F], F]:
        document_and_serialise = super().response(status_code, schema, **kwargs)

        def decorator(func: F) -> F:
            inner = document_and_serialise(func)

            @functools.wraps(inner)
            def wrapper(*args: Any, **kw: Any) -> Response:
                response = inner(*args, **kw)
                for hook in g.pop("before_commit", ()):
                    hook(response)
                db.commit()
                return response

            return wrapper

        return decorator

    # -- authentication and authorisation -------------------------------------------
    def auth_required(self, *roles: Role, refresh: bool = False) -> Callable[[F], F]:
        """Require a valid token (and one of ``roles``); document 401, 403 and security.

        With no roles, any authenticated user passes. ``refresh=True`` requires a refresh
        token instead of an access token (only ``POST /api/auth/refresh``).
        """
        from .security import authenticate

        allowed = frozenset(roles)

        def decorator(func: F) -> F:
            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                authenticate(roles=allowed, refresh=refresh)
                return func(*args, **kwargs)

            wrapper._apidoc = deepcopy(getattr(func, "_apidoc", {}))  # type: ignore[attr-defined]
            manual = wrapper._apidoc.setdefault("manual_doc", {})  # type: ignore[attr-defined]
            manual["security"] = [{BEARER_SCHEME: []}]
            if allowed:
                names = ", ".join(sorted(r.value for r in allowed))
                manual.setdefault("description", "")
                manual["description"] = f"{manual['description']}\n\nRoles: {names}.".strip()
            responses = wrapper._apidoc.setdefault("response", {}).setdefault("responses", {})  # type: ignore[attr-defined]
            responses.setdefault(401, []).append("UNAUTHORIZED")
            if allowed:
                responses.setdefault(403, []).append("FORBIDDEN")
            return wrapper

        return decorator

    @staticmethod
    def errors(*statuses: int) -> Callable[[F], F]:
        """Document error responses a view can return (problem+json)."""

        def decorator(func: F) -> F:
            func._apidoc = deepcopy(getattr(func, "_apidoc", {}))  # type: ignore[attr-defined]
            responses = func._apidoc.setdefault("response", {}).setdefault("responses", {})  # type: ignore[attr-defined]
            for status in statuses:
                name = http.HTTPStatus(status).name
                if name not in responses.get(status, []):
                    responses.setdefault(status, []).append(name)
            return func

        return decorator

    @staticmethod
    def rate_limit_exempt(func: F) -> F:
        func._apidoc = deepcopy(getattr(func, "_apidoc", {}))  # type: ignore[attr-defined]
        func._apidoc["rate_limit_exempt"] = True  # type: ignore[attr-defined]
        return func

    @staticmethod
    def _prepare_rate_limit_doc(doc: dict[str, Any], doc_info: dict[str, Any], **_: Any) -> dict[str, Any]:
        if doc_info.get("rate_limit_exempt"):
            return doc
        responses = doc.setdefault("responses", {})
        for status, response in responses.items():
            if isinstance(response, dict) and str(status).startswith(("2", "3")):
                headers = response.setdefault("headers", {})
                for name in RATE_LIMIT_HEADERS:
                    headers.setdefault(name, name)
        responses.setdefault(429, "TOO_MANY_REQUESTS")
        return doc
