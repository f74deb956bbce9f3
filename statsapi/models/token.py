from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db import Base, UTCDateTime


class TokenFamily(Base):
    """One login session: a chain of rotated refresh tokens and their access tokens.

    Only the newest refresh token of a family is valid. Presenting an older one means it
    was stolen or replayed, so the whole family is revoked. Access tokens carry the family
    id too, so revoking a family (logout, reuse) ends its access tokens at once.
    """

    __tablename__ = "token_families"
    __table_args__ = (Index("ix_token_families_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    current_refresh_jti: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
