"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
# The oldest code head that still runs on the schema after this revision (docs/migrations.md):
# the previous revision for an expand step, or a contract step that waited a release after the
# code stopped needing what it removes; this revision itself for a change older code cannot
# survive (its replicas then leave rotation: /ready answers 503 "incompatible").
oldest_code_head: str = ${repr(down_revision or up_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
