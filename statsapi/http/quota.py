"""The daily record quota at the HTTP edge: spend it (``services.quota``), name it in the
rate-limit headers, refuse with a 429 that says when it resets."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g

from ..auth.guard import current_principal
from ..services.quota import Spent, spend_records
from .limits import Charge, Count, Quota
from .transaction import session


@dataclass(frozen=True)
class _DayCount(Count):
    """The day's count as the headers report it: what is really spent (a refused write
    spends nothing), and breached when this write did not fit, so it is the binding quota."""

    refused: bool = False

    @property
    def breached(self) -> bool:
        return self.refused


def spend_daily_records(count: int) -> Spent:
    """Spend ``count`` of the caller's daily records in the request's unit of work, or raise
    the 429 (which rolls the unit of work back: nothing is written)."""
    settings = current_app.extensions["statsapi.settings"]
    user_id = current_principal().id
    spent = spend_records(session(), user_id=user_id, count=count, limit=settings.quota_records_per_day)
    counts = g.get("rate_counts")
    if counts:  # the headers are on: the day's quota is among them
        quota = Quota("records-day", spent.limit, 86400)
        really_used = spent.used - count if spent.exceeded else spent.used
        day = _DayCount(
            Charge(quota, f"user:{user_id}", count),
            really_used,
            spent.resets_at.timestamp(),
            refused=spent.exceeded,
        )
        g.rate_counts = [*counts, day]
    if spent.exceeded:
        raise spent.refusal(retry_after=not counts)
    return spent
