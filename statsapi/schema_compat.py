"""Whether this code may serve the database's schema (``/ready``, the start-up check).

The code knows its own migrations and nothing newer. A database at:

* this code's head: ``ok``;
* a revision this code knows below its head: ``behind``, not ready (run the migrations);
* a revision this code does not know: newer than the code (an older release during a
  deploy). The migrations record, in ``schema_compatibility``, the oldest code head that
  still runs on that schema (``statsapi.migrate.record_compatibility``): ``ahead`` and ready
  when this code knows that floor (it is this code's head or older), else ``incompatible``.

Readiness is polled every few seconds by every balancer: one query on the usual path, and
the floor of a newer revision is read once per revision (a revision's floor never changes).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Connection, text

OK, BEHIND, AHEAD, INCOMPATIBLE = "ok", "behind", "ahead", "incompatible"
UPGRADE = "run `flask --app statsapi db upgrade`"


@dataclass(frozen=True)
class CodeSchema:
    """The migrations this code carries: its head and every revision it knows."""

    head: str | None
    known: frozenset[str]


@dataclass(frozen=True)
class SchemaState:
    status: str
    revision: str
    head: str | None
    oldest_code_head: str | None = None
    reason: str | None = None  # why this code may not serve it (None: it may)

    def check(self) -> dict[str, str | None]:
        """The ``migrations`` entry of ``/ready``."""
        found: dict[str, str | None] = {"status": self.status, "revision": self.revision, "head": self.head}
        if self.oldest_code_head is not None:
            found["oldest_code_head"] = self.oldest_code_head
        return found


class SchemaCheck:
    """Compares a database's revision with this code's migrations (thread-safe, cached)."""

    def __init__(self, code: CodeSchema) -> None:
        self.code = code
        self._floors: dict[str, str] = {}  # newer revision -> its recorded floor
        self._lock = threading.Lock()

    @classmethod
    def for_head(cls, head: str | None) -> SchemaCheck:
        """A check that accepts ``head`` only (code whose other revisions are unknown)."""
        return cls(CodeSchema(head=head, known=frozenset({head} if head else ())))

    @property
    def head(self) -> str | None:
        return self.code.head

    def state(self, conn: Connection, revision: str) -> SchemaState:
        """How the schema at ``revision`` (read from ``alembic_version`` on ``conn``) stands."""
        head = self.code.head
        if revision == head:
            return SchemaState(OK, revision, head)
        if revision in self.code.known:
            return SchemaState(
                BEHIND, revision, head, reason=f"schema at {revision}, code expects {head}: {UPGRADE}"
            )
        floor = self._floors.get(revision) or self._read_floor(conn, revision)
        if floor is None:
            reason = (
                f"schema at {revision} is newer than this code ({head}) and records no oldest "
                f"compatible code for it: {UPGRADE} with the release that carries {revision}"
            )
            return SchemaState(INCOMPATIBLE, revision, head, reason=reason)
        if floor in self.code.known:
            return SchemaState(AHEAD, revision, head, floor)
        reason = f"schema at {revision} needs code at {floor} or newer; this code is at {head}"
        return SchemaState(INCOMPATIBLE, revision, head, floor, reason)

    def _read_floor(self, conn: Connection, revision: str) -> str | None:
        try:
            row = conn.execute(
                text("SELECT revision, oldest_code_head FROM schema_compatibility WHERE id = 1")
            ).first()
        except Exception:  # no such table (a schema from before it): nothing recorded
            conn.rollback()  # PostgreSQL refuses anything else in a failed transaction
            return None
        if row is None or row[0] != revision:
            return None  # recorded for another revision: stale, so unknown (and not cached)
        with self._lock:
            self._floors[revision] = str(row[1])
        return str(row[1])
