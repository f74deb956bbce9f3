from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class RecordQuotaUsage(Base):
    """Records a user created on one UTC day (``QUOTA_RECORDS_PER_DAY``).

    One row per user, rewritten when the day changes: the table never grows beyond its
    users. Spent in the same transaction as the records, so a refused or failed write
    spends nothing, and the count survives any cache or Redis restart.
    """

    __tablename__ = "record_quota_usage"
    __table_args__ = (CheckConstraint("used >= 0", name="used_not_negative"),)

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date)
    used: Mapped[int] = mapped_column(BigInteger)
