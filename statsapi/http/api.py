"""flask-smorest with statsapi's house rules, added once.

* ``Api``: problem+json (with examples) for every documented error, the bearer and
  OAuth 2.0 password security schemes, one shared rate-limit header component; docs are
  served by ``resources.docs``.
* ``Blueprint``: decorators that are both the OpenAPI contract and the behaviour —
  ``auth_required(*roles)``, ``limit``, ``costs``, ``rate_limit_exempt`` and ``answers_from_cache``
  tell the request gate what to do (``http.gate``); ``commits`` commits the view's unit
  of work (``http.transaction``); every operation documents its 429 and the rate-limit
  headers unless exempt; query strings and bodies reject unknown fields (422), bodies
  must be JSON (415).
"""

from __future__ import annotations

import http
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from copy import deepcopy
from typing import Any, NoReturn

import flask_smorest
import marshmallow as ma
from apispec import BasePlugin
from flask import Request, request
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, UnicodeConverter

from ..models import Role
from ..problems import PROBLEM_MEDIA_TYPE, Problem
from ..state.stats_cache import CachedStats, CacheKey
from . import jsonio
from .apidoc import document_errors
from .gate import CacheUse, RouteQuota, exempt
from .openapi_docs import OAUTH_PASSWORD_SCHEME, problem_examples
from .reply import Reply
from .transaction import commits

F = Callable[..., Any]

BEARER_SCHEME = "bearerAuth"
OAUTH_SCHEME = "oauth2Password"
# Either scheme authorizes an operation: a pasted token or Swagger UI's username/password login.
SECURITY: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}, {OAUTH_SCHEME: []}]

RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 86400},
}
# Documented once: every limited response lists the one `RateLimit` component, whose
# description covers the companions, so Swagger UI shows one row, not five per response.
RATE_LIMIT_HEADER = {
    "description": (
        'Quota left: `"user-minute";r=299;t=42`; `RateLimit-Policy`, `X-RateLimit-*`: see *Rate limits*.'
    ),
    "schema": {"type": "string", "maxLength": 128, "pattern": '^"[a-z-]+";r=[0-9]+;t=[0-9]+$'},
}
RATE_LIMIT_HEADER_REFS = {"RateLimit": {"$ref": "#/components/headers/RateLimit"}}
REQUEST_ID_HEADER = {
    "description": "Yours if 1-128 of `A-Za-z0-9._:-`, else a new one; in logs and problems' `request_id`.",
    "schema": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}
REQUEST_ID_REF = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(
        required=True,
        metadata={
            "description": "URI reference identifying the problem type.",
            "format": "uri-reference",
            "maxLength": 256,
        },
    )
    title = ma.fields.String(
        required=True, metadata={"description": "Short summary of the problem type.", "maxLength": 128}
    )
    status = ma.fields.Integer(
        required=True,
        metadata={"description": "HTTP status code.", "format": "int32", "minimum": 400, "maximum": 599},
    )
    detail = ma.fields.String(
        required=True,
        metadata={"description": "Explanation specific to this occurrence.", "maxLength": 2048},
    )
    instance = ma.fields.String(
        metadata={"description": "The request path.", "format": "uri-reference", "maxLength": 2048}
    )
    errors = ma.fields.Dict(
        keys=ma.fields.String(metadata={"maxLength": 256}),
        values=ma.fields.List(ma.fields.String(metadata={"maxLength": 1024}), metadata={"maxItems": 100}),
        metadata={"description": "Field errors: dotted field path → messages."},
    )
    request_id = ma.fields.String(
        metadata={
            "description": "The `X-Request-ID` response header: correlates with the server's logs.",
            "maxLength": 128,
            "pattern": "^[A-Za-z0-9._:-]{1,128}$",
        }
    )


def _safe_text(_converter: Any, field: ma.fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Document what StrictSchema enforces on every input string: no NUL, no unpaired
    surrogate (fields with their own pattern or enum already exclude them)."""
    if ret.get("type") == "string" and not field.dump_only and not {"pattern", "enum"} & set(ret):
        return {"pattern": jsonio.SAFE_TEXT_PATTERN}
    return {}


class SchemaKeywords(BasePlugin):
    """``class Meta: openapi = {...}`` on a schema adds JSON Schema keywords that its fields
    cannot express (e.g. ``minProperties`` for "send at least one field") to its component."""

    def schema_helper(self, name: str, definition: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        meta = getattr(kwargs.get("schema"), "Meta", None)
        keywords = getattr(meta, "openapi", None)
        return dict(keywords) if keywords else None


class IdConverter(IntegerConverter):
    """``<id:name>``: 1 to 2^63-1, what a BIGINT key can hold (larger never reaches SQL)."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=2**63 - 1)


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
                response["content"] = {
                    PROBLEM_MEDIA_TYPE: {"schema": ProblemSchema, **problem_examples(status)}
                }
                # Limited requests carry the rate-limit headers whatever their outcome; the
                # request id is documented on successes and in the body (`request_id`).
                headers = {
                    **(RATE_LIMIT_HEADER_REFS if status < 500 else {}),
                    **_ERROR_HEADERS.get(status, {}),
                }
                if headers:
                    response["headers"] = headers
            elif status == http.HTTPStatus.NOT_MODIFIED:
                response["headers"] = {
                    "ETag": {
                        "description": "The current entity tag (unchanged).",
                        "schema": {"type": "string", "maxLength": 128},
                    },
                    **RATE_LIMIT_HEADER_REFS,
                    **REQUEST_ID_REF,
                }
            self.spec.components.response(status.name, response, lazy=True)

    def _init_spec(self, **kwargs: Any) -> None:
        kwargs["extra_plugins"] = [*(kwargs.get("extra_plugins") or ()), SchemaKeywords()]
        super()._init_spec(**kwargs)  # registers ProblemSchema as "Problem" via the responses
        self.ma_plugin.converter.add_attribute_function(_safe_text)
        self.spec.components.security_scheme(
            BEARER_SCHEME,
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": (
                    "Access token from `POST /api/auth/login` (refresh tokens are refused). "
                    "Tokens follow RFC8725 (JWT best current practices): the algorithm is pinned "
                    "to HS256 (`none` refused), `iss`, `aud`, `exp` and `typ`-like `type` claims "
                    "are checked, keys are selected by `kid`, and tokens are revocable."
                ),
            },
        )
        self.spec.components.security_scheme(OAUTH_SCHEME, OAUTH_PASSWORD_SCHEME)
        self.spec.components.header("RateLimit", RATE_LIMIT_HEADER, lazy=True)
        self.spec.components.header("X-Request-ID", REQUEST_ID_HEADER, lazy=True)
        self.register_converter(
            UnicodeConverter, lambda _converter: {"type": "string", "maxLength": 64, "pattern": "^[a-z-]+$"}
        )
        # Path ids (<id:...>) are positive 64-bit integers; anything else is a 404.
        self._app.url_map.converters["id"] = IdConverter
        self.register_converter(
            IdConverter,
            lambda _converter: {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1},
        )


_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'Bearer challenge; `error="invalid_token"` when a token was sent.',
            "schema": {"type": "string", "maxLength": 512, "pattern": "^Bearer "},
        }
    },
    405: {
        "Allow": {
            "description": "Methods this URL supports.",
            "schema": {"type": "string", "maxLength": 128, "pattern": "^[A-Z, ]+$"},
        }
    },
    409: {
        "Retry-After": {
            **RETRY_AFTER,
            "description": "When an Idempotency-Key is in flight: seconds to wait.",
        }
    },
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}


class StrictParser(FlaskParser):
    """webargs parser: unknown query parameters are errors; bodies must be JSON.

    Query strings are parsed once per schema and exact query string, then remembered (a
    bounded LRU): the same filters arrive again and again and parsing them is pure. The
    request gate and the view share the result (views treat parsed arguments as read-only).
    """

    def __init__(self, *args: Any, memo_size: int = 2048, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo: OrderedDict[tuple[int, bytes], Any] = OrderedDict()
        self._memo_size = memo_size
        self._memo_lock = threading.Lock()

    def parse(self, argmap: Any, req: Any = None, *, location: str | None = None, **kwargs: Any) -> Any:
        if location != "query" or kwargs:
            return super().parse(argmap, req, location=location, **kwargs)
        key = (id(argmap), (req or request).query_string)
        with self._memo_lock:
            parsed = self._memo.get(key)
        if parsed is None:
            parsed = super().parse(argmap, req, location=location)
            with self._memo_lock:
                self._memo[key] = parsed
                while len(self._memo) > self._memo_size:
                    self._memo.popitem(last=False)
        return parsed

    def parse_query(self, schema: Any, req: Request) -> Any:
        """The request's query arguments for ``schema``, or None if they do not validate."""
        try:
            return self.parse(schema, req=req, location="query")
        except HTTPException:
            return None

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }

    def load_json(self, req: Any, schema: ma.Schema) -> Any:
        has_body = req.content_length or req.headers.get("Transfer-Encoding")
        charset = req.mimetype_params.get("charset", "utf-8").lower()
        if has_body and not is_json_request(req):
            raise Problem(
                415,
                "The request body must be JSON (Content-Type: application/json).",
                headers={"Accept-Post": "application/json"},
            )
        if has_body and charset not in ("utf-8", "utf8"):
            raise Problem(415, "JSON bodies are UTF-8 (RFC 8259); drop the charset parameter or use utf-8.")
        return super().load_json(req, schema)

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return missing
        return jsonio.loads(req.get_data(cache=True))

    def _handle_invalid_json_error(self, error: Any, req: Any, *args: Any, **kwargs: Any) -> NoReturn:
        reason = getattr(error, "msg", "malformed")
        raise Problem(400, f"The request body is not acceptable JSON: {reason}.", errors={"_body": [reason]})


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's blueprint; every decorator here is both contract and behaviour:
    it documents the operation and tells the request gate (``http.gate``) what to do."""

    ARGUMENTS_PARSER = StrictParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._prepare_rate_limit_doc)

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Callable[[F], F]:
        """webargs parsing, and a note of what the view accepts (the gate refuses the rest)."""
        # One schema instance for the app's life (webargs would build one per request).
        instance = schema() if isinstance(schema, type) else schema
        parse = super().arguments(instance, location=location, **kwargs)

        def decorator(func: F) -> F:
            wrapped = parse(func)
            wrapped._statsapi_accepts = {*getattr(wrapped, "_statsapi_accepts", ()), location}
            if location == "query":
                wrapped._statsapi_query_schema = instance
            return wrapped

        return decorator

    def response(self, status_code: int, schema: Any = None, **kwargs: Any) -> Callable[[F], F]:
        """flask-smorest's response, with a stable operationId: "RecordById.patch" →
        "patchRecordById"."""
        document_and_serialise = super().response(status_code, schema, **kwargs)

        def decorator(func: F) -> F:
            wrapper = document_and_serialise(func)
            view, _, method = func.__qualname__.rpartition(".")
            wrapper._apidoc.setdefault("manual_doc", {}).setdefault("operationId", f"{method}{view}")
            return wrapper

        return decorator

    commits = staticmethod(commits)

    # -- what the gate does before the view -----------------------------------------
    def auth_required(self, *roles: Role, refresh: bool = False) -> Callable[[F], F]:
        """Require a valid, unrevoked token (and one of ``roles``); document 401, 403 and
        the security requirement. ``refresh=True``: a refresh token instead of an access
        token (only ``POST /api/auth/refresh``)."""
        allowed = frozenset(roles)

        def decorator(func: F) -> F:
            func._statsapi_auth = {  # type: ignore[attr-defined]
                "auth": True,
                "roles": allowed,
                "token_kind": "refresh" if refresh else "access",
            }
            func._apidoc = deepcopy(getattr(func, "_apidoc", {}))  # type: ignore[attr-defined]
            manual = func._apidoc.setdefault("manual_doc", {})  # type: ignore[attr-defined]
            manual["security"] = SECURITY
            if allowed:
                names = ", ".join(sorted(r.value for r in allowed))
                manual["description"] = f"{manual.get('description', '')}\n\nRoles: {names}.".strip()
            return self.errors(401, *((403,) if allowed else ()))(func)

        return decorator

    @staticmethod
    def limit(tier: str, *, per: Callable[[str, Request], str]) -> Callable[[F], F]:
        """Add the ``tier`` quotas (settings) to the caller's own, counted per ``per(subject)``
        where subject is the caller ("ip:..." or "user:...")."""

        def decorator(func: F) -> F:
            func._statsapi_quotas = [*getattr(func, "_statsapi_quotas", ()), RouteQuota(tier, per)]  # type: ignore[attr-defined]
            return func

        return decorator

    @staticmethod
    def costs(cost: Callable[[Request], int]) -> Callable[[F], F]:
        """The records this request writes, spent against the writer's ``records`` quota by
        the gate (``http.cost``); called on the raw request, before any parsing."""

        def decorator(func: F) -> F:
            func._statsapi_cost = cost  # type: ignore[attr-defined]
            return func

        return decorator

    @staticmethod
    def answers_from_cache(
        key: Callable[[Mapping[str, Any], int, Role], CacheKey],
        respond: Callable[[CachedStats, Request], Reply],
    ) -> Callable[[F], F]:
        """A cached read: the gate looks the answer up in its one round trip and, when it
        is there, answers with ``respond`` without running the view."""

        def decorator(func: F) -> F:
            func._statsapi_cache = CacheUse(key, respond)  # type: ignore[attr-defined]
            return func

        return decorator

    @staticmethod
    def errors(*statuses: int) -> Callable[[F], F]:
        """Document error responses a view can return (problem+json)."""
        return lambda func: document_errors(func, *statuses)

    @staticmethod
    def rate_limit_exempt(func: F) -> F:
        """Never limited (probes must answer whatever the load); no 429 documented."""
        exempt(func)
        func._apidoc = deepcopy(getattr(func, "_apidoc", {}))  # type: ignore[attr-defined]
        func._apidoc["rate_limit_exempt"] = True  # type: ignore[attr-defined]
        return func

    @staticmethod
    def _prepare_rate_limit_doc(doc: dict[str, Any], doc_info: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Every operation: 500 (problem, no internals), the request id, 400/413/415 with a
        body; all but liveness: 503 when the database is down, 429 and the rate-limit headers."""
        responses = doc.setdefault("responses", {})
        responses.setdefault(500, "INTERNAL_SERVER_ERROR")
        if "requestBody" in doc:
            # A body can be malformed JSON (400), too large (413) or not JSON at all (415).
            for status in (400, 413, 415):
                responses.setdefault(status, http.HTTPStatus(status).name)
        for status, response in responses.items():
            if isinstance(response, dict) and str(status).startswith(("2", "3")):
                response.setdefault("headers", {}).setdefault("X-Request-ID", "X-Request-ID")
        if doc_info.get("rate_limit_exempt"):
            return doc
        responses.setdefault(503, "SERVICE_UNAVAILABLE")
        for status, response in responses.items():
            if isinstance(response, dict) and str(status).startswith(("2", "3")):
                response.setdefault("headers", {}).setdefault("RateLimit", "RateLimit")
        responses.setdefault(429, "TOO_MANY_REQUESTS")
        return doc
