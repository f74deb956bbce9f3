"""This database's identity (one-row ``deployment`` table) and a TRUNCATE guard on the audit log.

* ``deployment`` holds a random UUID made here, at upgrade time, once per database: what is
  keyed by the database rather than by a process (the Redis key space) can name it, so two
  databases that share a Redis never read each other's entries. A downgrade and upgrade
  makes a new identity, which only means the old cached entries are never read again.
* 0001 refused UPDATE and DELETE on ``audit_events`` row by row; TRUNCATE fires no row
  triggers, so it emptied the log. PostgreSQL gets a statement trigger that refuses it (also
  when another table's ``TRUNCATE ... CASCADE`` reaches the log). SQLite has no TRUNCATE.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# A new table older code never reads, and a trigger on a statement it never issues.
oldest_code_head: str = "0003"


def upgrade() -> None:
    deployment = op.create_table(
        "deployment",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("identity", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_deployment_single_row")),
        sa.CheckConstraint("length(identity) = 36", name=op.f("ck_deployment_identity_is_uuid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment")),
    )
    now = dt.datetime.now(dt.UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # the app stores naive UTC text there (UTCDateTime)
    op.bulk_insert(deployment, [{"id": 1, "identity": str(uuid.uuid4()), "created_at": now}])

    if op.get_bind().dialect.name == "postgresql":
        # 0001's function raises whatever the trigger: reuse it for the statement-level event.
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.drop_table("deployment")
