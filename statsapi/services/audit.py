"""The append-only audit log, written in the same transaction as the change."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..db import UTCDateTime
from ..models import AuditEvent


def record(
    session: Session,
    *,
    actor_id: int | None,
    action: str,
    target_type: str,
    target_id: object,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
) -> AuditEvent:
    event = AuditEvent(
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        before=before,
        after=after,
        reason=reason,
        request_id=session.info.get("request_id"),
    )
    session.add(event)
    return event


def record_many(
    session: Session,
    *,
    actor_id: int | None,
    action: str,
    target_type: str,
    items: Sequence[tuple[object, Any]],
    occurred_at: dt.datetime | None = None,
) -> None:
    """One event per ``(target_id, after)`` (batch create), in one statement."""
    if not items:
        return
    common = {
        "occurred_at": occurred_at or utcnow(),
        "actor_id": actor_id,
        "action": action,
        "target_type": target_type,
        "request_id": session.info.get("request_id"),
    }
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _INSERT_UNNESTED,
            {
                **common,
                "target_id": [str(target_id) for target_id, _ in items],
                "after": [after for _, after in items],
            },
        )
        return
    # Core, not the ORM's bulk path: that spends more time sorting out rows than sending them.
    session.execute(
        insert(cast(Table, AuditEvent.__table__)),
        [
            {**common, "target_id": str(target_id), "before": None, "after": after, "reason": None}
            for target_id, after in items
        ],
    )


# As records.create_many: one array per column, one parameter set; events get ids in item
# order. ``before`` is JSON null, as the ORM stores ``None`` in a JSON column.
_INSERT_UNNESTED = text(
    """
    INSERT INTO audit_events (occurred_at, actor_id, action, target_type, target_id, before, after,
                              reason, request_id)
    SELECT :occurred_at, :actor_id, :action, :target_type, u.target_id, 'null', u.after, NULL, :request_id
    FROM unnest(CAST(:target_id AS VARCHAR[]), CAST(:after AS JSONB[]))
         WITH ORDINALITY AS u(target_id, after, n)
    ORDER BY u.n
    """
).bindparams(
    bindparam("occurred_at", type_=UTCDateTime()),
    bindparam("target_id", type_=ARRAY(String())),
    bindparam("after", type_=ARRAY(JSONB())),
)


def record_change(
    session: Session,
    *,
    actor_id: int | None,
    action: str,
    target: Any,
    before: Any = None,
    reason: str | None = None,
    noted: dict[str, Any] | None = None,
) -> AuditEvent:
    """The event for a change to ``target`` (a record or a user): its snapshot after the
    change, plus what ``noted`` adds (e.g. ``{"password_reset": True}``)."""
    return record(
        session,
        actor_id=actor_id,
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=target.id,
        before=before,
        after={**target.snapshot(), **(noted or {})},
        reason=reason,
    )


def search(
    session: Session,
    *,
    limit: int,
    after_id: int | None = None,
    actor_id: int | None = None,
    target: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[AuditEvent]:
    """Newest first (ids only grow), ``limit + 1`` rows for paging."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if after_id is not None:
        query = query.where(AuditEvent.id < after_id)
    if actor_id is not None:
        query = query.where(AuditEvent.actor_id == actor_id)
    if target is not None:
        target_type, _, target_id = target.partition(":")
        query = query.where(AuditEvent.target_type == target_type)
        if target_id:
            query = query.where(AuditEvent.target_id == target_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    return list(session.scalars(query))
