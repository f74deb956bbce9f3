from __future__ import annotations

from sqlalchemy import CheckConstraint, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class Currency(Base):
    """ISO 4217 reference data; records reference it so the database rejects unknown codes."""

    __tablename__ = "currencies"
    __table_args__ = (
        CheckConstraint("length(code) = 3 AND code = upper(code)", name="code_format"),
        CheckConstraint("minor_units IN (0, 2, 3, 4)", name="minor_units_known"),
    )

    code: Mapped[str] = mapped_column(String(3), primary_key=True)
    minor_units: Mapped[int] = mapped_column(SmallInteger)
