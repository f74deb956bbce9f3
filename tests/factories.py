"""Test data: users (with a known password), tokens without a login round trip,
records through the real service, and an ``Actor`` client that sends its token."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from statsapi.auth.passwords import hash_password
from statsapi.auth.tokens import TokenPair, issue_pair, refresh_ttl
from statsapi.clock import utcnow
from statsapi.db import get_database
from statsapi.models import Record, User
from statsapi.services import auth as auth_service
from statsapi.services import records as record_service

PASSWORD = "correct horse battery staple"
_HASH: dict[str, str] = {}


def password_hash(password: str = PASSWORD) -> str:
    """argon2 is deliberately slow: hash each distinct test password once."""
    if password not in _HASH:
        _HASH[password] = hash_password(password)
    return _HASH[password]


@dataclass
class Actor:
    """A client acting as one user: every request carries its access token."""

    client: FlaskClient
    user_id: int
    username: str
    role: str
    tokens: TokenPair
    password: str = PASSWORD
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def access_token(self) -> str:
        return self.tokens.access_token

    @property
    def refresh_token(self) -> str:
        return self.tokens.refresh_token

    def headers(self, headers: dict[str, str] | None = None, token: str | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token or self.access_token}",
            **self.extra_headers,
            **(headers or {}),
        }

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        return self.client.open(path, method=method, headers=self.headers(headers, token), **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)


def record_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "amount": "-12.50",
        "currency": "EUR",
        "category": "groceries",
        "occurred_at": "2026-03-01T09:30:00Z",
        "description": "Weekly shop",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None or k == "description"}


class Factory:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self._count = 0

    def user(
        self,
        *,
        role: str = "user",
        username: str | None = None,
        password: str = PASSWORD,
        is_active: bool = True,
    ) -> User:
        self._count += 1
        session = get_database(self.app).new_session()
        try:
            now = utcnow()
            user = User(
                username=(username or f"user{self._count}").lower(),
                password_hash=password_hash(password),
                role=role,
                is_active=is_active,
                token_generation=1,
                created_at=now,
                updated_at=now,
            )
            session.add(user)
            session.commit()
            return user
        finally:
            session.close()

    def tokens(self, user: User) -> TokenPair:
        """A fresh login session for ``user`` (no password round trip)."""
        session = get_database(self.app).new_session()
        try:
            with self.app.app_context():
                fresh = session.get(User, user.id)
                assert fresh is not None
                pair = issue_pair(auth_service.start_session(session, user=fresh, refresh_ttl=refresh_ttl()))
            session.commit()
            return pair
        finally:
            session.close()

    def actor(
        self,
        client: FlaskClient,
        *,
        role: str = "user",
        username: str | None = None,
        password: str = PASSWORD,
    ) -> Actor:
        user = self.user(role=role, username=username, password=password)
        return Actor(client, user.id, user.username, role, self.tokens(user), password)

    def record(self, owner: User | Actor | int, **overrides: Any) -> Record:
        """A record created through the service (audited, like the API does)."""
        owner_id = (
            owner if isinstance(owner, int) else (owner.user_id if isinstance(owner, Actor) else owner.id)
        )
        body = record_body(**overrides)
        occurred = body["occurred_at"]
        if isinstance(occurred, str):
            body["occurred_at"] = dt.datetime.fromisoformat(occurred.replace("Z", "+00:00"))
        session = get_database(self.app).new_session()
        try:
            record = record_service.create(session, owner_id=owner_id, data=body)
            session.commit()
            return record
        finally:
            session.close()
