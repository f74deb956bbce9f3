"""Rate limits (SPEC §4): quotas by tier, what a request is charged, and the headers.

* Subject: ``user:<id>`` on a route that takes an access token, when the token verifies
  (signature and expiry; revocation is judged after the count); otherwise — and always
  on routes that take no access token, such as login and refresh — ``ip:<client ip>``.
  The client IP comes from ``X-Forwarded-For`` only through exactly
  ``TRUSTED_PROXY_HOPS`` proxies (ProxyFix, see ``create_app``).
* Tiers: anonymous, user, and analyst/admin ("elevated"); a route may add its own
  quotas (login: per IP + username; password change: per user). Each is a string such
  as ``"5/minute;30/hour"``, parsed once at start-up by ``limits`` (flask-limiter's engine).
* Counting: fixed windows. The request gate sends every charge in its one Redis round
  trip (shared by all workers and instances); without Redis, or while it is unreachable,
  ``LocalCounters`` count in this process.
* Headers on every limited response: ``RateLimit-Policy`` and ``RateLimit`` (IETF
  draft-ietf-httpapi-ratelimit-headers) and ``X-RateLimit-Limit/Remaining/Reset``;
  a 429 also carries ``Retry-After`` and a problem+json body.
* Cost: a write also spends its number of records against the writer's ``records`` quota
  (``RATELIMIT_RECORDS``): a 1000-record batch is one request but a thousand records. The
  request quota keeps counting requests, so each header's unit stays what it says.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import parse_many
from limits.storage import MemoryStorage

from ..config import Settings

_WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


@dataclass(frozen=True)
class Quota:
    """One limit, e.g. 300 per 60 s, named for the headers (``"user-minute"``)."""

    name: str
    amount: int
    window: int

    @functools.cached_property
    def policy(self) -> str:
        return f'"{self.name}";q={self.amount};w={self.window}'


def quotas(tier: str, spec: str) -> tuple[Quota, ...]:
    """``"5/minute;30/hour"`` as quotas of ``tier`` (raises ValueError when malformed)."""
    parsed = []
    for item in parse_many(spec):
        window = item.get_expiry()
        parsed.append(Quota(f"{tier}-{_WINDOW_NAMES.get(window, f'{window}s')}", item.amount, window))
    return tuple(parsed)


@dataclass(frozen=True)
class Charge:
    """What one request costs against one quota of one subject."""

    quota: Quota
    subject: str
    cost: int = 1

    @property
    def key(self) -> str:
        return f"{self.quota.amount}/{self.quota.window}:{self.subject}"


@dataclass(frozen=True)
class Count:
    """A quota's state right after this request was counted."""

    charge: Charge
    count: int
    reset_at: float  # Unix time

    @property
    def remaining(self) -> int:
        return max(self.charge.quota.amount - self.count, 0)

    @property
    def breached(self) -> bool:
        return self.count > self.charge.quota.amount


class Tiers:
    """Every quota the settings define, parsed once."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.ratelimit_enabled
        self.by_name = {
            "anonymous": quotas("anonymous", settings.ratelimit_anonymous),
            "user": quotas("user", settings.ratelimit_user),
            "elevated": quotas("elevated", settings.ratelimit_elevated),
            "login": quotas("login", settings.ratelimit_login),
            "password": quotas("password", settings.ratelimit_login),
            # Records written, per user: a route's cost (``Blueprint.costs``), not its requests.
            "records": quotas("records", settings.ratelimit_records),
        }

    def charges(self, tier: str, subject: str, cost: int = 1) -> list[Charge]:
        return [Charge(quota, subject, cost) for quota in self.by_name[tier]] if self.enabled else []


class LocalCounters:
    """Fixed windows in this process: the embedded default, and the fallback while Redis
    is unreachable (each process then counts on its own)."""

    def __init__(self) -> None:
        self._storage = MemoryStorage()

    def hit(self, charges: Sequence[Charge]) -> list[Count]:
        counts = []
        for charge in charges:
            key = f"statsapi:{charge.key}"
            count = self._storage.incr(key, charge.quota.window, amount=charge.cost)
            counts.append(Count(charge, count, self._storage.get_expiry(key)))
        return counts

    def reset(self) -> None:
        self._storage.reset()


def binding(counts: Sequence[Count]) -> Count:
    """The limit the client should hear about: one that was breached, else the nearest."""
    breached = [c for c in counts if c.breached]
    return min(breached or counts, key=lambda c: (c.remaining, c.charge.quota.window))


def headers(counts: Sequence[Count], *, status: int) -> dict[str, str]:
    """The rate-limit headers for a response, naming the binding limit."""
    current = counts[0] if len(counts) == 1 else binding(counts)
    seconds_left = max(int(current.reset_at - time.time()), 0)
    out = {
        "RateLimit-Policy": ", ".join(c.charge.quota.policy for c in counts),
        "RateLimit": f'"{current.charge.quota.name}";r={current.remaining};t={seconds_left}',
        "X-RateLimit-Limit": str(current.charge.quota.amount),
        "X-RateLimit-Remaining": str(current.remaining),
        "X-RateLimit-Reset": str(int(current.reset_at)),
    }
    if status == 429:
        out["Retry-After"] = str(max(seconds_left, 1))
    return out
