"""Passwords, tokens and the per-request authentication check.

Token model (SPEC §4 "Auth semantics"):

* Every token carries ``sub`` (user id as a string), ``jti``, ``iat``, ``exp``, ``type``,
  ``role``, ``gen`` (the user's token generation when issued) and ``fam`` (its login
  family). HS256 is pinned; ``none`` and every other algorithm are refused; ``iss`` and
  ``aud`` are checked; a ``kid`` header selects the key so keys can be rotated.
* A token is accepted only while the user is active, ``gen`` equals the user's current
  generation and the family is not revoked. Role change, deactivation, password change
  and admin revocation bump the generation, so the very next request of every older token
  fails. PostgreSQL holds that state; ``token_state`` may cache it (Redis).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    verify_jwt_in_request,
)
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..http.errors import Problem, problem_response
from ..metrics import AUTH_FAILURES
from ..models import Role, User
from .token_state import AuthState, load_auth_state

log = logging.getLogger(__name__)

ISSUER = "statsapi"
AUDIENCE = "statsapi"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "jti", "iat", "exp", "type", "role", "gen", "fam")

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
password_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the username is unknown, so both failures cost the same time.
_DUMMY_HASH = password_hasher.hash(secrets.token_urlsafe(32))


class VerifiedTokens:
    """Tokens this app has verified, by their exact text (a bounded LRU).

    Verifying means parsing and HMAC-checking three base64 segments, and every request
    needs it more than once (rate-limit key, authentication). The result for a given
    token string never changes while the app's keys do not (they are fixed per app), so
    it is kept; only the time checks (``exp``, ``nbf``) are redone on every use, and an
    expired token is dropped. Failures are never kept.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._claims: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            claims = self._claims.get(token)
            if claims is None:
                return None
            now = time.time()
            if not claims["nbf" if "nbf" in claims else "iat"] <= now < claims["exp"]:
                del self._claims[token]
                return None
            self._claims.move_to_end(token)
            return dict(claims)

    def put(self, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            self._claims[token] = dict(claims)
            self._claims.move_to_end(token)
            while len(self._claims) > self._size:
                self._claims.popitem(last=False)


class StatsapiJWTManager(JWTManager):
    """flask-jwt-extended, verifying each token string once per app (see VerifiedTokens)."""

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: Any = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if csrf_value is not None or allow_expired:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        verified: VerifiedTokens = current_app.extensions["statsapi.verified_tokens"]
        claims = verified.get(encoded_token)
        if claims is None:
            claims = super()._decode_jwt_from_config(encoded_token)
            verified.put(encoded_token, claims)
        return claims

    def verify(self, encoded_token: str) -> dict[str, Any]:
        """Signature, claims and expiry checked (no revocation check): raises if invalid."""
        return self._decode_jwt_from_config(encoded_token)


jwt = StatsapiJWTManager()


# -- passwords ------------------------------------------------------------------------
def hash_password(password: str) -> str:
    return password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-work check: an unknown user still costs one argon2 verification."""
    try:
        return password_hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return password_hasher.check_needs_rehash(password_hash)


# -- keys -----------------------------------------------------------------------------
def key_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SigningKeys:
    current_kid: str
    current: str
    by_kid: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        keys = {key_id(k): k for k in (settings.jwt_secret_key, *settings.jwt_previous_secret_keys)}
        return cls(key_id(settings.jwt_secret_key), settings.jwt_secret_key, keys)

    def for_header(self, header: Mapping[str, Any]) -> str:
        kid = header.get("kid")
        # An unknown kid gets a throwaway key: the signature check then fails as usual.
        return self.by_kid.get(kid, secrets.token_hex(32)) if isinstance(kid, str) else secrets.token_hex(32)


def signing_keys() -> SigningKeys:
    return current_app.extensions["statsapi.keys"]


def derive_key(purpose: str) -> bytes:
    """A sub-key of the current signing key for another purpose (e.g. cursors)."""
    return hmac.new(signing_keys().current.encode(), purpose.encode(), hashlib.sha256).digest()


# -- issuing --------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


def new_jti() -> str:
    return str(uuid.uuid4())


def issue_pair(user: User, family_id: str, refresh_jti: str) -> TokenPair:
    claims = {"role": user.role, "gen": user.token_generation, "fam": family_id}
    headers = {"kid": signing_keys().current_kid}
    identity = str(user.id)
    access = create_access_token(identity, additional_claims=claims, additional_headers=headers)
    refresh = create_refresh_token(
        identity, additional_claims={**claims, "jti": refresh_jti}, additional_headers=headers
    )
    expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return TokenPair(access, refresh, int(expires.total_seconds()))


def refresh_expiry() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]


# -- verifying ------------------------------------------------------------------------
class Principal:
    """The authenticated caller of this request."""

    def __init__(self, state: AuthState, claims: Mapping[str, Any]) -> None:
        self.state = state
        self.claims = claims
        self._user = state.user

    @property
    def id(self) -> int:
        return self.state.user_id

    @property
    def role(self) -> Role:
        return Role(self.state.role)

    @property
    def family_id(self) -> str:
        return str(self.claims["fam"])

    @property
    def user(self) -> User:
        """The user row, loaded on first use (the cached auth path never needs it)."""
        if self._user is None:
            from .. import db

            user = db.session().get(User, self.id)
            if user is None:
                raise Problem(401, "The token's user no longer exists.", slug="invalid-token")
            self._user = user
        return self._user


def authenticate(*, roles: Collection[Role] = (), refresh: bool = False) -> Principal:
    """Verify the bearer token and the caller's role; raise 401/403 problems."""
    verify_jwt_in_request(refresh=refresh)
    principal: Principal = g.principal
    if roles and principal.role not in roles:
        AUTH_FAILURES.labels(reason="forbidden").inc()
        raise Problem(
            403,
            f"Your role ({principal.role.value}) may not perform this operation.",
            slug="forbidden",
        )
    return principal


def current_principal() -> Principal:
    return g.principal


def peek_identity(authorization: str | None) -> tuple[int, Role] | None:
    """Signature- and expiry-checked identity for rate-limit keys (no database).

    Runs before the view, so it must be cheap; revocation is checked later by the view.
    """
    if not authorization or not authorization.startswith("Bearer "):
        return None
    g.peeking_at_token = True  # failures are counted once, by authentication proper
    try:
        # The same verification (and cache) as authentication proper: one parse per token.
        claims = jwt.verify(authorization[7:].strip())
    except (pyjwt.PyJWTError, ValueError, KeyError, HTTPException):
        return None
    finally:
        g.peeking_at_token = False
    if claims.get("type") != "access":
        return None
    return int(claims["sub"]), Role(claims["role"])


class NormaliseBearerScheme:
    """WSGI middleware: auth schemes are case-insensitive (RFC 9110 §11.1), so
    ``bearer x`` and ``BEARER x`` mean ``Bearer x`` to every layer after this one."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        header = environ.get("HTTP_AUTHORIZATION")
        if header:
            scheme, sep, rest = header.strip().partition(" ")
            if sep and scheme.lower() == "bearer" and scheme != "Bearer":
                environ["HTTP_AUTHORIZATION"] = f"Bearer {rest.strip()}"
        return self.wsgi_app(environ, start_response)


# -- flask-jwt-extended wiring --------------------------------------------------------
def _challenge(error: str | None, description: str) -> dict[str, str]:
    if error is None:
        return {"WWW-Authenticate": 'Bearer realm="statsapi"'}
    safe = description.replace('"', "'")
    return {"WWW-Authenticate": f'Bearer realm="statsapi", error="{error}", error_description="{safe}"'}


def unauthorized(detail: str, *, token_sent: bool = True, reason: str = "invalid_token") -> Response:
    AUTH_FAILURES.labels(reason=reason).inc()
    return problem_response(
        401,
        detail,
        slug="invalid-token",
        headers=_challenge("invalid_token" if token_sent else None, detail),
    )


def _missing_token(_message: str) -> Response:
    header = request.headers.get("Authorization", "")
    if not header:
        return unauthorized("A bearer token is required.", token_sent=False, reason="missing")
    # RFC 6750 §3.1: credentials of another scheme (Basic, ...) are no bearer token, so the
    # challenge names no error; a mangled "Bearer ..." header is a token that failed.
    sent_bearer = header.split(" ", 1)[0].lower() == "bearer"
    return unauthorized(
        "The Authorization header must be 'Bearer <token>'.", token_sent=sent_bearer, reason="malformed"
    )


def _invalid_token(message: str) -> Response:
    # flask-jwt-extended's WrongTokenError messages: access and refresh never swap roles.
    if message == "Only non-refresh tokens are allowed":
        return unauthorized("An access token is required; a refresh token was sent.", reason="wrong_type")
    if message == "Only refresh tokens are allowed":
        return unauthorized("A refresh token is required; an access token was sent.", reason="wrong_type")
    return unauthorized("The token is invalid.", reason="invalid")


def _expired_token(_header: dict[str, Any], _data: dict[str, Any]) -> Response:
    return unauthorized("The token has expired.", reason="expired")


def _revoked_token(_header: dict[str, Any], _data: dict[str, Any]) -> Response:
    return unauthorized("The token has been revoked.", reason="revoked")


def _decode_key(header: dict[str, Any], raw_claims: dict[str, Any]) -> str:
    """The key for this token's ``kid``, once its claims have the shape we issue.

    The one place claims are checked: flask-jwt-extended calls this before verifying the
    signature, with the claims exactly as the token carries them (afterwards it fills in
    a missing ``type`` and ``jti``); a forged token then fails the signature check anyway.
    """
    well_formed = (
        all(claim in raw_claims for claim in REQUIRED_CLAIMS)
        and str(raw_claims["sub"]).isdigit()
        and raw_claims["type"] in ("access", "refresh")
    )
    if not well_formed:
        if not g.get("peeking_at_token"):
            AUTH_FAILURES.labels(reason="invalid").inc()
        detail = "The token lacks required claims."
        raise Problem(401, detail, slug="invalid-token", headers=_challenge("invalid_token", detail))
    return signing_keys().for_header(header)


def _is_revoked(_header: dict[str, Any], data: dict[str, Any]) -> bool:
    """One lookup per request: user, generation and family; stores the principal."""
    state = load_auth_state(int(data["sub"]), str(data["fam"]))
    if state is None or not state.accepts(data):
        return True
    g.principal = Principal(state, data)
    return False


def init_app(app: Flask, settings: Settings) -> None:
    keys = SigningKeys.from_settings(settings)
    app.extensions["statsapi.keys"] = keys
    app.extensions["statsapi.verified_tokens"] = VerifiedTokens()
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret_key,
        JWT_ALGORITHM=ALGORITHM,
        JWT_DECODE_ALGORITHMS=[ALGORITHM],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_HEADER_TYPE="Bearer",
        JWT_ACCESS_TOKEN_EXPIRES=dt.timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=dt.timedelta(days=settings.refresh_token_days),
        JWT_ENCODE_ISSUER=ISSUER,
        JWT_DECODE_ISSUER=ISSUER,
        JWT_ENCODE_AUDIENCE=AUDIENCE,
        JWT_DECODE_AUDIENCE=AUDIENCE,
        JWT_ERROR_MESSAGE_KEY="detail",
        JWT_DECODE_LEEWAY=0,
        JWT_COOKIE_CSRF_PROTECT=False,  # headers only: no cookies, no CSRF claim
    )
    jwt.init_app(app)
    jwt.encode_key_loader(lambda _identity: signing_keys().current)
    jwt.decode_key_loader(_decode_key)
    jwt.unauthorized_loader(_missing_token)
    jwt.invalid_token_loader(_invalid_token)
    jwt.expired_token_loader(_expired_token)
    jwt.revoked_token_loader(_revoked_token)
    jwt.token_in_blocklist_loader(_is_revoked)
