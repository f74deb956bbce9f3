"""Problem assertions and JWT tools shared by the auth, token, admin and error tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
from werkzeug.test import TestResponse

from statsapi.auth.tokens import ALGORITHM, TokenPair, key_id
from statsapi.db import get_database
from statsapi.models import User

from .conftest import TEST_SECRET
from .factories import Factory

PROBLEM_MEDIA_TYPE = "application/problem+json"


def assert_problem(
    response: TestResponse,
    status: int,
    type_: str | None = None,
    *,
    detail: str | None = None,
    error_keys: set[str] | None = None,
) -> dict[str, Any]:
    """An RFC 9457 body with ``status``; optionally its exact ``type``, ``detail`` and ``errors`` keys."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == PROBLEM_MEDIA_TYPE, response.headers
    body = response.get_json()
    assert isinstance(body, dict), text
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body["type"], str)
    assert body["request_id"] == response.headers["X-Request-ID"]
    if type_ is not None:
        assert body["type"] == type_, body
    if detail is not None:
        assert body["detail"] == detail, body
    if error_keys is not None:
        assert set(body.get("errors", {})) == error_keys, body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: TestResponse) -> str:
    value = response.headers.get("WWW-Authenticate", "")
    assert value.startswith("Bearer "), response.headers
    return value


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a token, without checking its signature."""
    return pyjwt.get_unverified_header(token), pyjwt.decode(token, options={"verify_signature": False})


def mint(
    claims: dict[str, Any],
    *,
    key: str = TEST_SECRET,
    kid: str | None = None,
    algorithm: str = ALGORITHM,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign ``claims`` as statsapi would (HS256, ``kid`` of ``key``) unless told otherwise."""
    header = {"kid": kid if kid is not None else key_id(key), **(headers or {})}
    return pyjwt.encode(claims, key, algorithm=algorithm, headers=header)


def remint(token: str, *, drop: tuple[str, ...] = (), key: str = TEST_SECRET, **changes: Any) -> str:
    """Re-sign a real token's claims with changes (and ``drop``-ped claims) applied."""
    _, claims = unverified_parts(token)
    claims.update(changes)
    for name in drop:
        claims.pop(name, None)
    return mint(claims, key=key)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A hand-built JWS compact token (e.g. ``alg: none``), bypassing PyJWT's guards."""
    parts = [json.dumps(header).encode(), json.dumps(claims).encode()]
    return ".".join([*(b64url(p) for p in parts), signature])


def another_session(factory: Factory, user_id: int) -> TokenPair:
    """A second, independent login session (token family) for an existing user."""
    session = get_database(factory.app).new_session()
    try:
        user = session.get(User, user_id)
        assert user is not None
    finally:
        session.close()
    return factory.tokens(user)
