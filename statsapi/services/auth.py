"""Login, refresh rotation with reuse detection, logout and password change.

These decide *whether* tokens may be issued and record it; the caller issues them
(``auth.tokens.issue_pair``) from the ``Grant`` returned.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from ..auth.passwords import hash_password, needs_rehash, verify_password
from ..clock import utcnow
from ..db import note_family_revoked, rowcount
from ..models import TokenFamily, User
from ..problems import AuthenticationFailed, InvalidInput, RefreshReuse, WrongPassword
from . import audit
from .users import find_by_username, revoke_all_tokens


@dataclass(frozen=True)
class Grant:
    """A login family's right to a new token pair: its user, family and refresh token id."""

    user: User
    family_id: str
    refresh_jti: str


def new_jti() -> str:
    return str(uuid.uuid4())


def login(session: Session, *, username: str, password: str, refresh_ttl: dt.timedelta) -> Grant:
    """Same answer and the same work for an unknown user, a wrong password or a
    deactivated account: one argon2 verification, then 401."""
    user = find_by_username(session, username=username)
    valid = verify_password(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        raise AuthenticationFailed
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return start_session(session, user=user, refresh_ttl=refresh_ttl)


def start_session(session: Session, *, user: User, refresh_ttl: dt.timedelta) -> Grant:
    """A new login family and its first token pair (after the caller authenticated).

    The user's expired families are deleted on the way: the table cleans itself as people
    log in (``flask --app statsapi purge`` does it for everyone).
    """
    session.execute(
        delete(TokenFamily).where(TokenFamily.user_id == user.id, TokenFamily.expires_at <= utcnow())
    )
    refresh_jti = new_jti()
    family = TokenFamily(
        id=str(uuid.uuid4()),
        user_id=user.id,
        current_refresh_jti=refresh_jti,
        created_at=utcnow(),
        expires_at=utcnow() + refresh_ttl,
    )
    session.add(family)
    session.flush()
    return Grant(user, family.id, refresh_jti)


def rotate(
    session: Session, *, user: User, family_id: str, presented_jti: str, refresh_ttl: dt.timedelta
) -> Grant:
    """Swap the family's current refresh token for a new one, atomically.

    Compare-and-set on ``current_refresh_jti``: of two concurrent refreshes with one token
    only one wins; the loser, like any replay of an old token, revokes the family.
    """
    new = new_jti()
    now = utcnow()
    swapped = rowcount(
        session.execute(
            update(TokenFamily)
            .where(
                TokenFamily.id == family_id,
                TokenFamily.user_id == user.id,
                TokenFamily.current_refresh_jti == presented_jti,
                TokenFamily.revoked_at.is_(None),
            )
            .values(current_refresh_jti=new, rotated_at=now, expires_at=now + refresh_ttl)
            .execution_options(synchronize_session=False)
        )
    )
    if swapped != 1:
        revoke_family(session, family_id=family_id, reason="reuse")
        raise RefreshReuse("This refresh token was already used; the session has been revoked.")
    return Grant(user, family_id, new)


def revoke_family(session: Session, *, family_id: str, reason: str) -> None:
    note_family_revoked(session, family_id)
    session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )


def change_password(session: Session, *, user: User, current_password: str, new_password: str) -> None:
    if not verify_password(user.password_hash, current_password):
        raise WrongPassword
    if new_password.lower() == user.username:
        raise InvalidInput("new_password", "The password must differ from the username.")
    before = user.snapshot()
    user.password_hash = hash_password(new_password)
    revoke_all_tokens(user)
    audit.record_change(
        session,
        actor_id=user.id,
        action="user.password_change",
        target=user,
        before=before,
        noted={"password_changed": True},
    )
