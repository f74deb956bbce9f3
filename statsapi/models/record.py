from __future__ import annotations

import datetime as dt
from typing import NamedTuple, Protocol

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
        return snapshot(self)


class RecordData(Protocol):
    """What serialisers read from a record: a ``Record`` or a ``RecordRow``."""

    @property
    def id(self) -> int: ...
    @property
    def owner_id(self) -> int: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def occurred_at(self) -> dt.datetime: ...
    @property
    def description(self) -> str | None: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def updated_at(self) -> dt.datetime: ...
    @property
    def version(self) -> int: ...


class RecordRow(NamedTuple):
    """A record as a bulk insert wrote it: a ``Record``'s fields without ORM state, which
    costs more to build than the insert itself when a batch holds a thousand records."""

    id: int
    owner_id: int
    amount_minor: int
    currency: str
    category: str
    occurred_at: dt.datetime
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int


def snapshot(record: RecordData) -> dict[str, object]:
    """A record's audit content (``after`` of a create, ``before`` of a delete)."""
    return {
        "id": record.id,
        "owner_id": record.owner_id,
        "amount": format_minor(record.amount_minor, record.currency),
        "currency": record.currency,
        "category": record.category,
        "occurred_at": record.occurred_at.isoformat().replace("+00:00", "Z"),
        "description": record.description,
        "version": record.version,
    }
