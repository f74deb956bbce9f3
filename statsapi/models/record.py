from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db import Base, BigId, UTCDateTime
from ..money import ISO_4217, MAX_INTEGER_DIGITS, format_minor


def amount_bound_sql(table: dict[str, int] = ISO_4217) -> str:
    """|amount| < 10^13 major units, per currency, as a portable CHECK expression.

    Most currencies have 2 minor units (the ELSE branch); the others are listed. A new
    currency with other minor units needs a migration, like any change to the table.
    """
    exceptions: dict[int, list[str]] = {}
    for code, digits in table.items():
        if digits != 2:
            exceptions.setdefault(digits, []).append(code)
    whens = " ".join(
        f"WHEN currency IN ({', '.join(repr(c) for c in sorted(codes))}) "
        f"THEN {10 ** (MAX_INTEGER_DIGITS + digits)}"
        for digits, codes in sorted(exceptions.items())
    )
    return f"abs(amount_minor) < CASE {whens} ELSE {10 ** (MAX_INTEGER_DIGITS + 2)} END"


class Record(Base):
    """One financial transaction. Amounts are integer minor units of ``currency``."""

    __tablename__ = "records"
    __table_args__ = (
        CheckConstraint(amount_bound_sql(), name="amount_within_currency_bound"),
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
