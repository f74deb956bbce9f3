"""Token lifecycle attacks and revocation that takes effect on the very next request (SPEC §4)."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jwt.warnings import InsecureKeyLengthWarning

from statsapi.auth.tokens import REQUIRED_CLAIMS, key_id

from .apitools import (
    another_session,
    assert_problem,
    b64url,
    bearer,
    challenge,
    mint,
    remint,
    unsigned_token,
    unverified_parts,
)
from .conftest import TEST_SECRET
from .factories import PASSWORD, Actor, Factory

ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"
OTHER_SECRET = "another-" + "Zq8Lw3Nx6Vb1Mc4Kd7Jf0Hg2Ps5Rt9Yu"
INVALID = "/problems/invalid-token"


def assert_rejected(client: FlaskClient, token: str, path: str = ME, detail: str | None = None) -> None:
    response = (
        client.get(path, headers=bearer(token)) if path == ME else client.post(path, headers=bearer(token))
    )
    assert_problem(response, 401, INVALID, detail=detail)
    assert 'error="invalid_token"' in challenge(response)


def test_a_faithfully_reminted_token_is_accepted(client: FlaskClient, as_user: Actor) -> None:
    """Control for the attacks below: re-signing the same claims with the real key works."""
    response = client.get(ME, headers=bearer(remint(as_user.access_token)))

    assert response.status_code == 200
    assert response.get_json()["id"] == as_user.user_id


def test_alg_none_is_rejected(client: FlaskClient, as_user: Actor) -> None:
    header, claims = unverified_parts(as_user.access_token)

    for alg in ("none", "None", "NONE"):
        assert_rejected(
            client, unsigned_token({**header, "alg": alg}, claims), detail="The token is invalid."
        )
    # Even with the original signature kept, alg none must not skip the check.
    signature = as_user.access_token.rsplit(".", 1)[1]
    assert_rejected(client, unsigned_token({**header, "alg": "none"}, claims, signature))


def test_other_algorithms_are_rejected(client: FlaskClient, as_user: Actor) -> None:
    _, claims = unverified_parts(as_user.access_token)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the test key is short for HS384/512
        for algorithm in ("HS384", "HS512"):
            assert_rejected(client, mint(claims, algorithm=algorithm, kid=key_id(TEST_SECRET)))


def test_token_signed_with_the_wrong_key_is_rejected(client: FlaskClient, as_user: Actor) -> None:
    _, claims = unverified_parts(as_user.access_token)

    # Claiming the real key's kid but signed with another key.
    assert_rejected(client, mint(claims, key=OTHER_SECRET, kid=key_id(TEST_SECRET)))
    assert_rejected(client, mint(claims, key=OTHER_SECRET))


def test_expired_token_is_rejected(client: FlaskClient, as_user: Actor) -> None:
    past = int(time.time()) - 3600
    token = remint(as_user.access_token, iat=past - 900, nbf=past - 900, exp=past)

    assert_rejected(client, token, detail="The token has expired.")


def test_expired_refresh_token_is_rejected(client: FlaskClient, as_user: Actor) -> None:
    past = int(time.time()) - 60
    assert_rejected(client, remint(as_user.refresh_token, exp=past), REFRESH, detail="The token has expired.")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_rejected(client: FlaskClient, as_user: Actor, claim: str) -> None:
    assert_rejected(client, remint(as_user.access_token, drop=(claim,)))


@pytest.mark.parametrize(
    "changes",
    [{"iss": "someone-else"}, {"aud": "another-api"}, {"sub": "alice"}, {"sub": "999999"}, {"gen": 0},
     {"fam": "00000000-0000-0000-0000-000000000000"}, {"type": "id"}, {"nbf": int(time.time()) + 3600}],
    ids=["iss", "aud", "sub-not-id", "sub-unknown", "old-generation", "unknown-family", "type", "not-yet"],
)  # fmt: skip
def test_token_with_wrong_claims_is_rejected(
    client: FlaskClient, as_user: Actor, changes: dict[str, object]
) -> None:
    assert_rejected(client, remint(as_user.access_token, **changes))


def test_forged_role_claim_grants_nothing(client: FlaskClient, as_user: Actor) -> None:
    """Even a correctly signed token's role claim is not trusted over the database."""
    token = remint(as_user.access_token, role="admin")

    response = client.get("/api/admin/users", headers=bearer(token))

    assert_problem(response, 403, "/problems/forbidden")


def test_refresh_token_is_not_an_access_token(client: FlaskClient, as_user: Actor) -> None:
    assert_rejected(
        client, as_user.refresh_token, detail="An access token is required; a refresh token was sent."
    )
    response = client.post("/api/records", headers=bearer(as_user.refresh_token), json={})
    assert_problem(response, 401, INVALID)


def test_access_token_is_not_a_refresh_token(client: FlaskClient, as_user: Actor) -> None:
    assert_rejected(
        client, as_user.access_token, REFRESH, detail="A refresh token is required; an access token was sent."
    )
    # The refused attempt spent nothing: the real refresh token still rotates.
    assert client.post(REFRESH, headers=bearer(as_user.refresh_token)).status_code == 200


def test_tampered_payload_is_rejected(client: FlaskClient, as_user: Actor, as_admin: Actor) -> None:
    header, claims = as_user.access_token.split(".")[:2]
    signature = as_user.access_token.split(".")[2]
    _, payload = unverified_parts(as_user.access_token)
    for change in ({"role": "admin"}, {"sub": str(as_admin.user_id)}, {"exp": payload["exp"] + 86400}):
        forged = b64url(json.dumps({**payload, **change}).encode())
        assert_rejected(client, f"{header}.{forged}.{signature}", detail="The token is invalid.")
    # A flipped signature character fails too.
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert_rejected(client, f"{header}.{claims}.{flipped}")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "", "...", "eyJhbGciOiJIUzI1NiJ9.e30."])
def test_garbage_tokens_are_rejected(client: FlaskClient, token: str) -> None:
    response = client.get(ME, headers={"Authorization": f"Bearer {token}"})

    assert_problem(response, 401, INVALID)
    assert challenge(response)


@pytest.mark.parametrize(
    ("header", "token_sent"),
    [("Basic YWxpY2U6cGFzc3dvcmQ=", False), ("Token abc", False), ("Bearer", True), ("Bearer  ", True)],
)
def test_other_authorization_schemes_are_rejected(client: FlaskClient, header: str, token_sent: bool) -> None:
    response = client.get(ME, headers={"Authorization": header})

    detail = None if token_sent else "The Authorization header must be 'Bearer <token>'."
    assert_problem(response, 401, INVALID, detail=detail)
    # RFC 6750 §3.1: only a (failed) bearer token earns error="invalid_token".
    assert ('error="invalid_token"' in challenge(response)) is token_sent


def test_unknown_kid_is_rejected(client: FlaskClient, as_user: Actor) -> None:
    _, claims = unverified_parts(as_user.access_token)

    assert_rejected(client, mint(claims, kid="not-a-key-id"))
    header, _ = unverified_parts(as_user.access_token)
    assert header["kid"] == key_id(TEST_SECRET)
    assert_rejected(client, unsigned_token({"alg": "HS256", "typ": "JWT"}, claims, "x"))


# -- key rotation ---------------------------------------------------------------------
def test_tokens_signed_with_a_previous_key_still_verify(
    client: FlaskClient, make_app: Callable[..., Flask], as_user: Actor
) -> None:
    rotated = make_app(JWT_SECRET_KEY=OTHER_SECRET, JWT_PREVIOUS_SECRET_KEYS=f"{TEST_SECRET}")
    rotated_client = rotated.test_client()

    response = rotated_client.get(ME, headers=bearer(as_user.access_token))
    assert response.status_code == 200
    refreshed = rotated_client.post(REFRESH, headers=bearer(as_user.refresh_token))
    assert refreshed.status_code == 200
    # New tokens are signed with the new current key ...
    new_access = refreshed.get_json()["access_token"]
    assert unverified_parts(new_access)[0]["kid"] == key_id(OTHER_SECRET)
    assert rotated_client.get(ME, headers=bearer(new_access)).status_code == 200
    # ... which the app that does not know it refuses.
    assert_rejected(client, new_access)
    # A kid nobody knows fails on the rotated app too.
    _, claims = unverified_parts(new_access)
    assert_problem(rotated_client.get(ME, headers=bearer(mint(claims, kid="retired"))), 401, INVALID)


def test_a_dropped_key_no_longer_verifies(make_app: Callable[..., Flask], as_user: Actor) -> None:
    rotated = make_app(JWT_SECRET_KEY=OTHER_SECRET)

    response = rotated.test_client().get(ME, headers=bearer(as_user.access_token))

    assert_problem(response, 401, INVALID)


# -- revocation on the very next request -----------------------------------------------
def _change_role(admin: Actor, target: Actor, _other: str = "") -> None:
    response = admin.put(
        f"/api/admin/users/{target.user_id}/role", json={"role": "analyst", "reason": "test"}
    )
    assert response.status_code == 200


def _deactivate(admin: Actor, target: Actor, _other: str = "") -> None:
    assert admin.patch(f"/api/admin/users/{target.user_id}", json={"is_active": False}).status_code == 200


def _reset_password(admin: Actor, target: Actor, _other: str = "") -> None:
    response = admin.patch(f"/api/admin/users/{target.user_id}", json={"password": "a brand new password"})
    assert response.status_code == 200


def _own_password_change(_admin: Actor, target: Actor, other: str) -> None:
    body = {"current_password": PASSWORD, "new_password": "a brand new password"}
    # Changed through another session: the target's tokens are the bystanders.
    assert target.post("/api/auth/password", json=body, token=other).status_code == 204


def _revoke(admin: Actor, target: Actor, _other: str = "") -> None:
    assert admin.post(f"/api/admin/users/{target.user_id}/revoke-tokens").status_code == 204


@pytest.mark.parametrize(
    "change",
    [_change_role, _deactivate, _reset_password, _own_password_change, _revoke],
    ids=["role-change", "deactivation", "password-reset", "password-change", "admin-revoke"],
)
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_old_tokens_fail_on_the_very_next_request(
    factory: Factory,
    make_app: Callable[..., Flask],
    app: Flask,
    change: Callable[[Actor, Actor, str], None],
    backend: str,
) -> None:
    api = app if backend == "memory" else make_app(REDIS_URL="default")
    client = api.test_client()
    admin = factory.actor(client, role="admin", username="root")
    target = factory.actor(client, role="user", username="alice")
    other = another_session(factory, target.user_id).access_token
    # Warm every path (and any cache of token state) with the old tokens first.
    for _ in range(2):
        assert target.get(ME).status_code == 200
        assert target.get("/api/records").status_code == 200

    change(admin, target, other)

    assert_problem(target.get(ME), 401, INVALID, detail="The token has been revoked.")
    assert_problem(target.get("/api/records"), 401, INVALID)
    assert_problem(client.post(REFRESH, headers=bearer(target.refresh_token)), 401, INVALID)
    assert admin.get(ME).status_code == 200  # the admin's own session is untouched


def test_new_role_applies_to_new_tokens(client: FlaskClient, factory: Factory, as_admin: Actor) -> None:
    target = factory.actor(client, role="user", username="alice")
    assert_problem(target.get("/api/records", query_string={"owner_id": as_admin.user_id}), 403)

    _change_role(as_admin, target)
    fresh = another_session(factory, target.user_id)

    me = client.get(ME, headers=bearer(fresh.access_token))
    assert me.get_json()["role"] == "analyst"
    assert unverified_parts(fresh.access_token)[1]["role"] == "analyst"
    listing = client.get(
        "/api/records", query_string={"owner_id": as_admin.user_id}, headers=bearer(fresh.access_token)
    )
    assert listing.status_code == 200
    assert_problem(
        client.post("/api/records", json={}, headers=bearer(fresh.access_token)), 403, "/problems/forbidden"
    )


def test_login_after_deactivation_fails_and_reactivation_restores(
    client: FlaskClient, factory: Factory, as_admin: Actor
) -> None:
    target = factory.actor(client, role="user", username="alice")
    _deactivate(as_admin, target)

    denied = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert_problem(
        denied, 401, "/problems/invalid-credentials", detail="The username or password is incorrect."
    )

    assert as_admin.patch(f"/api/admin/users/{target.user_id}", json={"is_active": True}).status_code == 200
    assert client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    # Reactivation does not resurrect the tokens revoked by the deactivation.
    assert_problem(target.get(ME), 401, INVALID)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_name_is_case_insensitive(scheme: str, as_user: Actor) -> None:
    """RFC 9110 §11.1: authentication scheme names are case-insensitive."""
    response = as_user.client.get(
        "/api/auth/me", headers={"Authorization": f"{scheme} {as_user.access_token}"}
    )
    assert response.status_code == 200
    assert response.json["username"] == as_user.username
