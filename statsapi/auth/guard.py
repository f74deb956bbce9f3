"""The guard's judgement: is this token still honoured, and may its role do this?

``judge`` takes the token's verified claims and the user's revocation state (from the
token-state cache or PostgreSQL) and returns the request's ``Principal``, or raises the
401 or 403 problem. The request gate calls it for every route that takes a token.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from flask import g

from ..http.transaction import session
from ..models import Role, User
from ..problems import Forbidden, InvalidToken
from .token_state import AuthState


class Principal:
    """The authenticated caller of this request."""

    def __init__(self, state: AuthState, claims: Mapping[str, Any]) -> None:
        self.state = state
        self.claims = claims
        self.id = state.user_id
        self.role = Role(state.role)
        self._user = state.user

    @property
    def family_id(self) -> str:
        return str(self.claims["fam"])

    @property
    def user(self) -> User:
        """The user row, loaded on first use (the cached path never needs it)."""
        if self._user is None:
            user = session().get(User, self.id)
            if user is None:
                raise InvalidToken("The token's user no longer exists.")
            self._user = user
        return self._user


def judge(claims: Mapping[str, Any], state: AuthState | None, roles: Collection[Role]) -> Principal:
    """The principal for a still-honoured token whose role is one of ``roles`` (any if empty)."""
    if state is None or not state.accepts(claims):
        raise InvalidToken("The token has been revoked.", reason="revoked")
    principal = Principal(state, claims)
    if roles and principal.role not in roles:
        raise Forbidden(f"Your role ({principal.role.value}) may not perform this operation.")
    return principal


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal
