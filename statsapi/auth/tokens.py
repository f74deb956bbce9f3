"""JWTs: keys, issuing and verifying (flask-jwt-extended does the encoding and decoding).

Token model (SPEC §4 "Auth semantics"):

* Every token carries ``sub`` (user id as a string), ``jti``, ``iat``, ``exp``, ``type``,
  ``role``, ``gen`` (the user's token generation when issued) and ``fam`` (its login
  family). HS256 is pinned; ``none`` and every other algorithm are refused; ``iss`` and
  ``aud`` are checked; a ``kid`` header selects the key so keys can be rotated.
* Verifying here checks signature, claims and expiry only. Whether the token is still
  honoured (user active, generation current, family live) is the guard's question,
  answered from PostgreSQL or its cache (``token_state``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from flask import Flask, current_app
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException

from ..config import Settings
from ..problems import InvalidToken
from ..services.auth import Grant

ISSUER = "statsapi"
AUDIENCE = "statsapi"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "jti", "iat", "exp", "type", "role", "gen", "fam")

jwt = JWTManager()


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

    def derive(self, purpose: str) -> bytes:
        """A sub-key of the current signing key for another purpose (cursors, cache entries)."""
        return hmac.new(self.current.encode(), purpose.encode(), hashlib.sha256).digest()


def signing_keys() -> SigningKeys:
    return current_app.extensions["statsapi.keys"]


def derive_key(purpose: str) -> bytes:
    return signing_keys().derive(purpose)


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


def refresh_ttl() -> dt.timedelta:
    ttl: dt.timedelta = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    return ttl


def issue_pair(grant: Grant) -> TokenPair:
    """An access and a refresh token for what a login or a rotation granted."""
    user = grant.user
    claims = {"role": user.role, "gen": user.token_generation, "fam": grant.family_id}
    headers = {"kid": signing_keys().current_kid}
    identity = str(user.id)
    access = create_access_token(identity, additional_claims=claims, additional_headers=headers)
    refresh = create_refresh_token(
        identity, additional_claims={**claims, "jti": grant.refresh_jti}, additional_headers=headers
    )
    expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return TokenPair(access, refresh, int(expires.total_seconds()))


# -- verifying ------------------------------------------------------------------------
class VerifiedTokens:
    """Tokens this app has verified, by their exact text (a bounded LRU).

    The result of verifying a given token string never changes while the app's keys do
    not (they are fixed per app), so it is kept; only the time checks (``exp``, ``nbf``)
    are redone on every use, and an expired token is dropped. Failures are never kept.
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
            if not claims["nbf" if "nbf" in claims else "iat"] <= time.time() < claims["exp"]:
                del self._claims[token]
                return None
            self._claims.move_to_end(token)
            return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            self._claims[token] = claims
            self._claims.move_to_end(token)
            while len(self._claims) > self._size:
                self._claims.popitem(last=False)


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive,
    RFC 9110 §11.1), or the 401 that says what is wrong with the header."""
    if not header:
        raise InvalidToken("A bearer token is required.", token_sent=False, reason="missing")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        # RFC 6750 §3.1: credentials of another scheme (Basic, ...) are no bearer token, so the
        # challenge names no error; a mangled "Bearer ..." header is a token that failed.
        sent_bearer = bool(parts) and parts[0].lower() == "bearer"
        detail = "The Authorization header must be 'Bearer <token>'."
        raise InvalidToken(detail, token_sent=sent_bearer, reason="malformed")
    return parts[1]


def verify(token: str, *, kind: str = "access") -> dict[str, Any]:
    """Claims of a genuine, unexpired token of ``kind``; else the 401 that says why."""
    verified: VerifiedTokens = current_app.extensions["statsapi.verified_tokens"]
    claims = verified.get(token)
    if claims is None:
        try:
            claims = decode_token(token)
        except pyjwt.ExpiredSignatureError:
            raise InvalidToken("The token has expired.", reason="expired") from None
        except (pyjwt.PyJWTError, JWTExtendedException, ValueError, KeyError, TypeError):
            raise InvalidToken("The token is invalid.") from None
        verified.put(token, claims)
    if claims["type"] != kind:
        detail = (
            "An access token is required; a refresh token was sent."
            if kind == "access"
            else "A refresh token is required; an access token was sent."
        )
        raise InvalidToken(detail, reason="wrong_type")
    return claims


def _decode_key(header: dict[str, Any], raw_claims: dict[str, Any]) -> str:
    """The key for this token's ``kid``, once its claims have the shape we issue.

    flask-jwt-extended calls this before verifying the signature, with the claims exactly
    as the token carries them; a forged token then fails the signature check anyway.
    """
    well_formed = (
        all(claim in raw_claims for claim in REQUIRED_CLAIMS)
        and str(raw_claims["sub"]).isdigit()
        and raw_claims["type"] in ("access", "refresh")
    )
    if not well_formed:
        raise InvalidToken("The token lacks required claims.")
    return signing_keys().for_header(header)


def init_app(app: Flask, settings: Settings) -> SigningKeys:
    keys = app.extensions["statsapi.keys"] = SigningKeys.from_settings(settings)
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
        JWT_DECODE_LEEWAY=0,
        JWT_COOKIE_CSRF_PROTECT=False,  # headers only: no cookies, no CSRF claim
    )
    jwt.init_app(app)
    jwt.encode_key_loader(lambda _identity: signing_keys().current)
    jwt.decode_key_loader(_decode_key)
    return keys
