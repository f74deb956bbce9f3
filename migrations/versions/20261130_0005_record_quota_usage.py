"""Fair use: the per-user daily record quota and compact idempotency replays.

* ``record_quota_usage``: one row per user, the records created on one UTC day
  (``QUOTA_RECORDS_PER_DAY``), spent in the same transaction as the records.
* ``idempotency_keys.response_ids``: a response over ``IDEMPOTENCY_REPLAY_MAX_BYTES`` is
  stored as the ids of the records it created and rebuilt from them on replay.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# A new table and a nullable column: code at 0004 neither reads nor fills them.
oldest_code_head: str = "0004"


def upgrade() -> None:
    op.create_table(
        "record_quota_usage",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("used >= 0", name=op.f("ck_record_quota_usage_used_not_negative")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_record_quota_usage_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_record_quota_usage")),
    )
    op.add_column("idempotency_keys", sa.Column("response_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("response_ids")
    op.drop_table("record_quota_usage")
