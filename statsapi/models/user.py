from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Boolean, CheckConstraint, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db import Base, BigId, UTCDateTime


class Role(enum.StrEnum):
    """Roles form a hierarchy: user < analyst < admin."""

    USER = "user"
    ANALYST = "analyst"
    ADMIN = "admin"


ROLES: tuple[Role, ...] = (Role.USER, Role.ANALYST, Role.ADMIN)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Usernames are stored lower-cased, so the unique constraint is case-insensitive.
        CheckConstraint("username = lower(username)", name="username_lowercase"),
        CheckConstraint("length(username) BETWEEN 3 AND 64", name="username_length"),
        CheckConstraint("role IN ('user', 'analyst', 'admin')", name="role_known"),
        CheckConstraint("token_generation >= 1", name="token_generation_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user", server_default=text("'user'"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Bumped on role change, deactivation, password change and admin revocation: every
    # token carries the generation it was issued under and dies when it no longer matches.
    token_generation: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def snapshot(self) -> dict[str, object]:
        """Audit-safe view (never the password hash)."""
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "is_active": self.is_active,
            "token_generation": self.token_generation,
        }
