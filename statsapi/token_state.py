"""Revocation state of tokens: user generation, active flag and login family.

PostgreSQL is the truth. Each authenticated request needs one answer: is this user
active, is the token's generation current, is its family unrevoked? One query answers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select

from . import db
from .models import TokenFamily, User


@dataclass(frozen=True)
class AuthState:
    user: User
    family_live: bool

    def accepts(self, claims: Mapping[str, Any]) -> bool:
        return self.user.is_active and self.family_live and claims.get("gen") == self.user.token_generation


def load_auth_state(user_id: int, family_id: str) -> AuthState | None:
    session = db.session()
    row = session.execute(
        select(User, TokenFamily.revoked_at, TokenFamily.id)
        .outerjoin(TokenFamily, and_(TokenFamily.id == family_id, TokenFamily.user_id == User.id))
        .where(User.id == user_id)
    ).first()
    if row is None:
        return None
    user, revoked_at, found_family = row
    return AuthState(user=user, family_live=found_family is not None and revoked_at is None)
