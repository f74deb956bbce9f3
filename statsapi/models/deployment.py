from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime


class Deployment(Base):
    """This database's identity: one row with a random UUID, made by the migration that
    created the table (never by the app, which may only read it).

    Whatever is keyed by the database rather than by the process (e.g. the Redis key space)
    can name it, so two deployments that share a Redis never share entries.
    """

    __tablename__ = "deployment"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("length(identity) = 36", name="identity_is_uuid"),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    identity: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
