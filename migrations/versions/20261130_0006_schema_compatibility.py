"""Which code may serve this schema: the one-row ``schema_compatibility`` table.

Every revision declares ``oldest_code_head``: the oldest migration head a release may
carry and still run on the schema after that revision (docs/migrations.md). After each
upgrade or downgrade, ``migrations/env.py`` writes the newest such floor of the applied
revisions here, with the revision it holds for. A release that does not know the database's
revision (the previous one, during a deploy) reads the row in ``/ready`` and stays in
rotation only if it knows the floor, that is, if the floor is its own head or older.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# A new table that code at 0005 never reads.
oldest_code_head: str = "0005"


def upgrade() -> None:
    op.create_table(
        "schema_compatibility",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.String(length=32), nullable=False),
        sa.Column("oldest_code_head", sa.String(length=32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_schema_compatibility_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_compatibility")),
    )
    # The row itself is written by env.py once the whole run is done (and on downgrades).


def downgrade() -> None:
    op.drop_table("schema_compatibility")
