"""The OAuth 2.0 token endpoint's form and answer (RFC 6749 §4.3, §5.1, §5.2)."""

from __future__ import annotations

from typing import Any, NoReturn

import marshmallow as ma

from ..http.api import ProblemSchema
from ..problems import Problem
from .common import StrictSchema
from .fields import Text
from .users import TokenPairSchema

GRANT_TYPES = ["password"]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


def oauth_error(code: str, description: str, *, auth_failure: str | None = None) -> Problem:
    """A 400 problem that also carries RFC 6749 §5.2's ``error`` and ``error_description``."""
    problem = Problem(
        400,
        description,
        slug=code.replace("_", "-"),
        headers=NO_STORE,
        error=code,
        error_description=description,
    )
    problem.auth_failure = auth_failure
    return problem


class PasswordGrantSchema(StrictSchema):
    """``grant_type=password&username=…&password=…``; other parameters (``scope``,
    ``client_id``, ``client_secret``, which Swagger UI may send) are ignored (RFC 6749 §3.2).
    Text holding NUL or unpaired surrogates is refused (StrictSchema), as at login."""

    class Meta:
        unknown = ma.EXCLUDE
        openapi = {
            "example": {"grant_type": "password", "username": "alice", "password": "correct horse battery"}
        }

    grant_type = ma.fields.String(required=True, metadata={"enum": GRANT_TYPES})
    # As at /api/auth/login: no format rules, a malformed username fails like a wrong one.
    username = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=256))
    password = ma.fields.String(
        required=True,
        load_only=True,
        validate=ma.validate.Length(min=1, max=1024),
        metadata={"format": "password"},
    )

    @ma.validates("grant_type")
    def _supported(self, value: str, **_: Any) -> None:
        if value not in GRANT_TYPES:
            raise oauth_error(
                "unsupported_grant_type", f"grant_type {value[:64]!r} is not supported; use password."
            )

    def handle_error(self, error: ma.ValidationError, data: Any, **_: Any) -> NoReturn:
        """Field errors become RFC 6749's ``invalid_request`` (400), not a 422."""
        fields = error.normalized_messages()
        problems = "; ".join(
            f"{name}: {' '.join(map(str, messages))}" for name, messages in sorted(fields.items())
        )
        raise oauth_error(
            "invalid_request",
            f"Send grant_type=password, username and password as "
            f"application/x-www-form-urlencoded ({problems}).",
        )


class OAuthProblemSchema(ProblemSchema):
    """A problem that is also an RFC 6749 §5.2 error response."""

    error = ma.fields.String(
        required=True, metadata={"enum": ["invalid_request", "invalid_grant", "unsupported_grant_type"]}
    )
    error_description = Text(1024, required=True, metadata={"description": "Same as `detail`."})


class OAuthTokenSchema(TokenPairSchema):
    """RFC 6749 §5.1 access token response: the login's pair, ``token_type`` in RFC 6749's case."""

    class Meta:
        openapi = {
            "example": {
                "access_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
                "token_type": "bearer",
                "expires_in": 900,
                "refresh_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.cmVmcmVzaA",
            }
        }

    token_type = ma.fields.String(required=True, metadata={"enum": ["bearer"]})
    refresh_token = Text(
        2048, required=True, metadata={"format": "jwt", "description": "For `POST /api/auth/refresh`."}
    )
