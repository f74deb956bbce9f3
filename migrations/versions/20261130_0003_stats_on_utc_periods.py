"""Extended statistics on the UTC day and month of records.occurred_at (PostgreSQL only).

GET /api/stats?group_by=day|month groups on these expressions. Without statistics on
them the planner assumes one group per distinct timestamp (~1 per row), chooses to sort
every row (on disk at 1 M rows) and JIT-compiles the plan; with them it knows there are
only ~days x currencies groups and aggregates them in a small in-memory hash table.

Statistics rather than an expression index: they cost nothing on insert or update (only
ANALYZE samples them), while an index would be written with every record, and for this
query it buys nothing: with one on the UTC day at 1 M rows, PostgreSQL still chose (rightly)
a sequential scan and a hash aggregate over walking every row in index order.

The expressions must match statsapi.services.stats (PG_UTC_DAY, PG_UTC_MONTH) exactly,
or the planner ignores them; frozen here with this revision (a test compares them).
SQLite has no such thing and plans these queries fine: a no-op there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Statistics only: code at 0002 runs unchanged.
oldest_code_head: str = "0002"

UTC_DAY = "CAST(occurred_at AT TIME ZONE 'UTC' AS DATE)"
UTC_MONTH = "date_trunc('month', occurred_at AT TIME ZONE 'UTC')"
STATISTICS = {"st_records_utc_day": UTC_DAY, "st_records_utc_month": UTC_MONTH}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, expression in STATISTICS.items():
        op.execute(f"CREATE STATISTICS {name} ON ({expression}) FROM records")
    # Fill them now (a bounded sample, seconds even at millions of rows) rather than at the
    # next autovacuum: until then the grouped stats would still sort on disk.
    op.execute("ANALYZE records")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in STATISTICS:
        op.execute(f"DROP STATISTICS IF EXISTS {name}")
