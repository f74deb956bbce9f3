"""The append-only audit log, written in the same transaction as the change."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ..clock import utcnow
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
    """One event per ``(target_id, after)`` (batch create), as one multi-row Core INSERT:
    the ORM's bulk path spends more time sorting out the rows than sending them."""
    if not items:
        return
    request_id = session.info.get("request_id")
    when = occurred_at or utcnow()
    session.execute(
        insert(AuditEvent.__table__),
        [
            {
                "occurred_at": when,
                "actor_id": actor_id,
                "action": action,
                "target_type": target_type,
                "target_id": str(target_id),
                "before": None,
                "after": after,
                "reason": None,
                "request_id": request_id,
            }
            for target_id, after in items
        ],
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
    return list(session.scalars(query))
