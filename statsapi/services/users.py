"""Users, roles and token revocation (generation bumps), each change audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import set_committed_value

from ..auth.passwords import hash_password
from ..clock import utcnow
from ..db import note_user_changed
from ..models import Role, User
from ..problems import Conflict, NotFound
from . import audit


def get(session: Session, *, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"User {user_id} was not found.")
    return user


def find_by_username(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username.strip().lower()))


def search(
    session: Session,
    *,
    limit: int,
    after_id: int | None,
    username: str | None = None,
    role: str | None = None,
    is_active: bool | None = None,
) -> list[User]:
    """Newest first, ``limit + 1`` rows for paging; ``username`` matches a part of the name."""
    query = select(User).order_by(User.id.desc()).limit(limit + 1)
    if after_id is not None:
        query = query.where(User.id < after_id)
    if username is not None:
        # Usernames are stored lower-case; "_" and "%" are matched as themselves.
        query = query.where(User.username.contains(username.lower(), autoescape=True))
    if role is not None:
        query = query.where(User.role == role)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    return list(session.scalars(query))


def create(session: Session, *, actor_id: int | None, username: str, password: str, role: str) -> User:
    if find_by_username(session, username=username) is not None:
        raise Conflict(f"The username {username!r} is taken.")
    now = utcnow()
    user = User(
        username=username.lower(),
        password_hash=hash_password(password),
        role=role,
        is_active=True,
        token_generation=1,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    audit.record_change(session, actor_id=actor_id, action="user.create", target=user)
    return user


def revoke_all_tokens(user: User) -> None:
    """Every token issued before now stops working on its next request.

    The increment happens in SQL (``token_generation + 1``, row-locked until commit), so two
    concurrent revocations both count: none can undo the other with a stale value.
    """
    session = object_session(user)
    assert session is not None
    now = utcnow()
    generation = session.execute(
        sql_update(User)
        .where(User.id == user.id)
        .values(token_generation=User.token_generation + 1, updated_at=now)
        .returning(User.token_generation)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(user, "token_generation", generation)
    set_committed_value(user, "updated_at", now)
    note_user_changed(user)


def _ensure_another_admin(session: Session, user: User) -> None:
    """Never leave the system without an active admin (no lock-out by mistake).

    The active admins' rows are locked first, so two admins demoting or deactivating
    each other at the same moment cannot both pass the check (no write skew).
    """
    admins = session.scalars(
        select(User.id).where(User.role == Role.ADMIN.value, User.is_active.is_(True)).with_for_update()
    ).all()
    if not [admin for admin in admins if admin != user.id]:
        raise Conflict("This is the last active admin; promote another admin first.")


def update(session: Session, *, actor_id: int, user: User, changes: dict[str, Any]) -> User:
    before = user.snapshot()
    activation = "is_active" in changes and changes["is_active"] != user.is_active
    if activation:
        if not changes["is_active"] and user.role == Role.ADMIN.value:
            _ensure_another_admin(session, user)
        user.is_active = changes["is_active"]
    if "password" in changes:
        user.password_hash = hash_password(changes["password"])
    if activation or "password" in changes:
        revoke_all_tokens(user)  # one bump for the whole change
        noted = {"password_reset": True} if "password" in changes else None
        audit.record_change(
            session, actor_id=actor_id, action="user.update", target=user, before=before, noted=noted
        )
    return user


def reset_password(session: Session, *, user: User, password: str, actor_id: int | None, reason: str) -> None:
    """Set a new password (recovery): every token the user holds stops working; audited."""
    before = user.snapshot()
    user.password_hash = hash_password(password)
    revoke_all_tokens(user)
    audit.record_change(
        session,
        actor_id=actor_id,
        action="user.password_reset",
        target=user,
        before=before,
        reason=reason,
        noted={"password_reset": True},
    )


def grant_role(session: Session, *, actor_id: int, user: User, role: str, reason: str) -> User:
    before = user.snapshot()
    if role != user.role:
        if user.role == Role.ADMIN.value:
            _ensure_another_admin(session, user)
        user.role = role
        # The new role takes effect at once: old tokens (with the old role) stop working.
        revoke_all_tokens(user)
    audit.record_change(
        session, actor_id=actor_id, action="role.grant", target=user, before=before, reason=reason
    )
    return user


def admin_revoke_tokens(session: Session, *, actor_id: int, user: User) -> None:
    before = user.snapshot()
    revoke_all_tokens(user)
    audit.record_change(session, actor_id=actor_id, action="token.revoke", target=user, before=before)
