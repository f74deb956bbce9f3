from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, BigId, UTCDateTime, utcnow
from ..money import format_minor

# The widest bound any currency allows (10^13 major units with 4 minor units); the API
# applies the exact per-currency bound.
AMOUNT_MINOR_LIMIT = 10**17


class Record(Base):
    """One financial transaction. Amounts are integer minor units of ``currency``."""

    __tablename__ = "records"
    __table_args__ = (
        CheckConstraint(f"abs(amount_minor) < {AMOUNT_MINOR_LIMIT}", name="amount_bounded"),
        CheckConstraint("length(category) BETWEEN 1 AND 64", name="category_length"),
        CheckConstraint("category = trim(category)", name="category_trimmed"),
        CheckConstraint("description IS NULL OR length(description) <= 500", name="description_length"),
        CheckConstraint("version >= 1", name="version_positive"),
        # Keyset pagination and scoped stats read these in order, newest first.
        Index("ix_records_owner_occurred", "owner_id", "occurred_at", "id"),
        Index("ix_records_occurred", "occurred_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    owner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="RESTRICT"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), ForeignKey("currencies.code"))
    category: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    # Optimistic concurrency: every ORM UPDATE/DELETE says "WHERE version = <loaded>",
    # bumps it, and raises StaleDataError when another writer got there first.
    __mapper_args__ = {"version_id_col": version}

    @property
    def amount(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    def snapshot(self) -> dict[str, object]:
        """JSON-safe content for the audit log (kept after a delete)."""
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "amount": self.amount,
            "currency": self.currency,
            "category": self.category,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "description": self.description,
            "version": self.version,
        }
