"""Users, roles and token revocation (generation bumps), each change audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Role, User
from ..security import hash_password
from ..token_state import note_user_changed
from . import audit
from .errors import Conflict, NotFound


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
    role: str | None = None,
    is_active: bool | None = None,
) -> list[User]:
    query = select(User).order_by(User.id.desc()).limit(limit + 1)
    if after_id is not None:
        query = query.where(User.id < after_id)
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
    audit.record(
        session,
        actor_id=actor_id,
        action="user.create",
        target_type="user",
        target_id=user.id,
        after=user.snapshot(),
    )
    return user


def revoke_all_tokens(user: User) -> None:
    """Every token issued before now stops working on its next request."""
    user.token_generation = user.token_generation + 1
    user.updated_at = utcnow()
    note_user_changed(user)


def _ensure_another_admin(session: Session, user: User) -> None:
    """Never leave the system without an active admin (no lock-out by mistake)."""
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN.value, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise Conflict("This is the last active admin; promote another admin first.")


def update(session: Session, *, actor_id: int, user: User, changes: dict[str, Any]) -> User:
    before = user.snapshot()
    if "is_active" in changes and changes["is_active"] != user.is_active:
        if not changes["is_active"] and user.role == Role.ADMIN.value:
            _ensure_another_admin(session, user)
        user.is_active = changes["is_active"]
        revoke_all_tokens(user)
    if "password" in changes:
        user.password_hash = hash_password(changes["password"])
        revoke_all_tokens(user)
    if session.is_modified(user):
        session.flush()
        after = user.snapshot()
        if "password" in changes:
            after["password_reset"] = True
        audit.record(
            session,
            actor_id=actor_id,
            action="user.update",
            target_type="user",
            target_id=user.id,
            before=before,
            after=after,
        )
    return user


def grant_role(session: Session, *, actor_id: int, user: User, role: str, reason: str) -> User:
    before = user.snapshot()
    if role != user.role:
        if user.role == Role.ADMIN.value:
            _ensure_another_admin(session, user)
        user.role = role
        # The new role takes effect at once: old tokens (with the old role) stop working.
        revoke_all_tokens(user)
        session.flush()
    audit.record(
        session,
        actor_id=actor_id,
        action="role.grant",
        target_type="user",
        target_id=user.id,
        before=before,
        after=user.snapshot(),
        reason=reason,
    )
    return user


def admin_revoke_tokens(session: Session, *, actor_id: int, user: User) -> None:
    before = user.snapshot()
    revoke_all_tokens(user)
    session.flush()
    audit.record(
        session,
        actor_id=actor_id,
        action="token.revoke",
        target_type="user",
        target_id=user.id,
        before=before,
        after=user.snapshot(),
    )
