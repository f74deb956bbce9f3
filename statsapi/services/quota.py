"""The daily record quota (``QUOTA_RECORDS_PER_DAY``), kept in PostgreSQL.

A quota is a business limit, not a shock absorber: it must hold across a Redis restart,
an eviction or a flush, so it lives next to the records it counts and is spent in their
transaction (``record_quota_usage``). A write that would go over it is refused whole,
with nothing written; a write that fails for any other reason rolls its spending back.

Cost: one ``INSERT ... ON CONFLICT ... RETURNING`` per write, never on a read. The row lock
it takes also serialises one user's concurrent writes, which is fair: a user's parallel
batches queue behind each other instead of occupying every worker at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..problems import Problem

_SPEND = text(
    """
    INSERT INTO record_quota_usage (user_id, day, used) VALUES (:user_id, :day, :n)
    ON CONFLICT (user_id) DO UPDATE SET
        used = CASE WHEN record_quota_usage.day = excluded.day
                    THEN record_quota_usage.used + excluded.used ELSE excluded.used END,
        day = excluded.day
    RETURNING used
    """
)


@dataclass(frozen=True)
class Spent:
    count: int  # records this write creates
    used: int  # records created today, this write included
    limit: int
    resets_at: dt.datetime  # next UTC midnight

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit

    @property
    def left_before(self) -> int:
        """What was left before this write (all of it is still left when it is refused)."""
        return max(self.limit - (self.used - self.count), 0)

    def refusal(self, *, retry_after: bool) -> Problem:
        now = utcnow()
        return QuotaExceeded(
            detail=(
                f"Daily record quota exceeded: {self.limit} records per day (records-day); this request "
                f"would create {self.count} and {self.left_before} are left today. Nothing was written; "
                f"the quota resets at {self.resets_at.strftime('%Y-%m-%dT%H:%M:%SZ')}."
            ),
            headers={"Retry-After": str(seconds_until(self.resets_at, now))} if retry_after else None,
        )


def seconds_until(moment: dt.datetime, now: dt.datetime) -> int:
    return max(int((moment - now).total_seconds()), 1)


class QuotaExceeded(Problem):
    status = 429
    slug = "quota-exceeded"


def spend_records(session: Session, *, user_id: int, count: int, limit: int) -> Spent:
    """Spend ``count`` records of today's quota in the caller's transaction. The caller
    raises ``refusal()`` when ``exceeded``, which rolls the spending back with the rest."""
    now = utcnow()
    resets_at = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    used = int(session.execute(_SPEND, {"user_id": user_id, "day": now.date(), "n": count}).scalar_one())
    return Spent(count, used, limit, resets_at)
