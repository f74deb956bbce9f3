"""Amounts bounded per currency in the database: |amount| < 10^13 major units.

0001 checked one bound for every currency (10^17 minor units), looser than the API for
all but 4-decimal currencies. This makes the database refuse exactly what the API
refuses, so a write that bypasses the API cannot store an amount the API would reject.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Code at 0001 runs on this schema: the API already refused what the new bound refuses.
oldest_code_head: str = "0001"

# Frozen with this revision (tests compare it with statsapi.models.record.amount_bound_sql()).
AMOUNT_BOUND = (
    "abs(amount_minor) < CASE "
    "WHEN currency IN ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', "
    "'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF') THEN 10000000000000 "
    "WHEN currency IN ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') THEN 10000000000000000 "
    "WHEN currency IN ('CLF', 'UYW') THEN 100000000000000000 "
    "ELSE 1000000000000000 END"
)
OLD_BOUND = "abs(amount_minor) < 100000000000000000"


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_constraint(op.f("ck_records_amount_bounded"), type_="check")
        batch.create_check_constraint(op.f("ck_records_amount_within_currency_bound"), AMOUNT_BOUND)


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_constraint(op.f("ck_records_amount_within_currency_bound"), type_="check")
        batch.create_check_constraint(op.f("ck_records_amount_bounded"), OLD_BOUND)
