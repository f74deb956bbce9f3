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
class QuotaCount(Count):
    """A quota counted outside the limiter, as the headers report it: what is really spent
    (a refused write spends nothing), and breached when this request did not fit, so it is
    the binding quota the headers name."""

    refused: bool = False

    @property
    def breached(self) -> bool:
        return self.refused


def note_count(quota: Quota, subject: str, used: int, reset_at: float, *, refused: bool) -> bool:
    """Add a quota's count to this response's rate-limit headers; False when they are off
    (rate limits disabled), so the caller sends its own ``Retry-After``."""
    counts = g.get("rate_counts")
    if not counts:
        return False
    g.rate_counts = [*counts, QuotaCount(Charge(quota, subject), used, reset_at, refused=refused)]
    return True


def spend_daily_records(count: int) -> Spent:
    """Spend ``count`` of the caller's daily records in the request's unit of work, or raise
    the 429 (which rolls the unit of work back: nothing is written)."""
    settings = current_app.extensions["statsapi.settings"]
    user_id = current_principal().id
    spent = spend_records(session(), user_id=user_id, count=count, limit=settings.quota_records_per_day)
    headers_on = note_count(
        Quota("records-day", spent.limit, 86400),
        f"user:{user_id}",
        spent.used - count if spent.exceeded else spent.used,
        spent.resets_at.timestamp(),
        refused=spent.exceeded,
    )
    if spent.exceeded:
        raise spent.refusal(retry_after=not headers_on)
    return spent
