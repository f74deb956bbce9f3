from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime


class SchemaCompatibility(Base):
    """Which code may serve this schema: one row, rewritten by every migration run
    (``migrations/env.py``), never by the app, which only reads it (``/ready``).

    ``oldest_code_head`` is the oldest migration head a release may have and still run on
    the schema at ``revision`` (docs/migrations.md). Code that does not know ``revision``
    (an older release during a deploy) serves only while it knows ``oldest_code_head``.
    """

    __tablename__ = "schema_compatibility"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    revision: Mapped[str] = mapped_column(String(32))
    oldest_code_head: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
