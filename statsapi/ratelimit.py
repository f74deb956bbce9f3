"""Rate limits (SPEC §4): tiers by role, a login limit, honest client IPs, standard headers.

* Key: ``user:<id>`` when a valid access token is presented (signature and expiry
  checked, no database), else ``ip:<client ip>``. The client IP comes from
  ``X-Forwarded-For`` only through exactly ``TRUSTED_PROXY_HOPS`` proxies (ProxyFix, see
  ``create_app``); with 0 hops the header is ignored, so forging it buys nothing.
* Tiers: anonymous, user, and analyst/admin ("elevated"); login adds a limit per
  IP + username. All are configurable strings such as ``"300/minute"``.
* Storage: Redis when ``REDIS_URL`` is set (one budget across all workers and
  instances), in-process otherwise. If Redis fails, flask-limiter falls back to
  per-process counters and returns to Redis by itself when it answers again.
* Headers on every limited response: ``RateLimit-Policy`` and ``RateLimit`` (IETF
  draft-ietf-httpapi-ratelimit-headers) and ``X-RateLimit-Limit/Remaining/Reset``;
  a 429 also carries ``Retry-After`` and a problem+json body.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from flask_limiter import Limiter, RequestLimit
from limits.storage import RedisStorage

from . import jsonio
from .config import Settings
from .metrics import RATE_LIMITED
from .models import Role
from .security import peek_identity

LOGIN_ENDPOINT = "auth.Login"
TOKEN_ENDPOINT = "auth.Token"  # noqa: S105 (an endpoint name): OAuth 2.0 password grant, the same login
PASSWORD_ENDPOINT = "auth.Password"  # noqa: S105 (an endpoint name)
# Probes and scrapes must never be refused for quota: liveness, readiness, metrics, assets.
EXEMPT_ENDPOINTS = frozenset({"ops.Health", "ops.Ready", "metrics", "docs.asset", "static"})
_GRANULARITY_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def _identity() -> tuple[str, str]:
    """``(key, tier)`` for this request, computed once."""
    cached = g.get("rate_limit_identity")
    if cached is None:
        peeked = peek_identity(request.headers.get("Authorization"))
        if peeked is None:
            cached = (f"ip:{request.remote_addr or 'unknown'}", "anonymous")
        else:
            user_id, role = peeked
            cached = (f"user:{user_id}", "user" if role is Role.USER else "elevated")
        g.rate_limit_identity = cached
    return cached


def request_key() -> str:
    return _identity()[0]


def login_key() -> str:
    body = jsonio.try_loads(request.get_data(cache=True)) if request.is_json else request.form
    username = body.get("username") if isinstance(body, dict) else None
    name = username.strip().lower()[:64] if isinstance(username, str) else "-"
    return f"login:{request.remote_addr or 'unknown'}:{name}"


_INCR_WITH_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call('INCRBY', KEYS[1], amount)
if current == amount then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {current, redis.call('PTTL', KEYS[1])}
"""


class CountingRedisStorage(RedisStorage):
    """Redis storage answering the header's questions from the hit itself.

    The stock fixed-window strategy costs three round trips for a limited request: the
    hit (INCR), then GET and TTL for the headers. Our hit script returns the count and
    the remaining TTL together, remembered for this request, so ``get`` and
    ``get_expiry`` need no further trip: one round trip per limit.
    """

    STORAGE_SCHEME = ["statsapi+redis", "statsapi+rediss"]

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.replace("statsapi+", "", 1), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_with_ttl = self.get_connection().register_script(_INCR_WITH_TTL.encode())

    @staticmethod
    def _memo() -> dict[str, tuple[int, float]] | None:
        return g.setdefault("rate_limit_memo", {}) if has_request_context() else None

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, ttl_ms = self.lua_incr_with_ttl([self.prefixed_key(key)], [expiry, amount])
        memo = self._memo()
        if memo is not None:
            memo[key] = (int(count), time.time() + max(int(ttl_ms), 0) / 1000)
        return int(count)

    def get(self, key: str) -> int:
        memo = self._memo()
        if memo and key in memo:
            return memo[key][0]
        return super().get(key)

    def get_expiry(self, key: str) -> float:
        memo = self._memo()
        if memo and key in memo:
            return memo[key][1]
        return super().get_expiry(key)


class RateLimits:
    """The limiter plus statsapi's tiers and headers."""

    def __init__(self) -> None:
        self.limiter = Limiter(
            key_func=request_key,
            # Application-wide, not per route: a user's 300/minute is one budget for the
            # whole API, shared by every worker and instance through Redis.
            application_limits=[self._tier_limit],
            headers_enabled=False,  # we write the IETF and X- headers ourselves
            in_memory_fallback_enabled=True,
        )
        self.settings: Settings | None = None

    def _tier_limit(self) -> str:
        assert self.settings is not None
        tier = _identity()[1]
        return {
            "anonymous": self.settings.ratelimit_anonymous,
            "user": self.settings.ratelimit_user,
            "elevated": self.settings.ratelimit_elevated,
        }[tier]

    def login_limit(self) -> str:
        assert self.settings is not None
        return self.settings.ratelimit_login

    def init_app(self, app: Flask, settings: Settings) -> None:
        """Bind to ``app``; call after the blueprints are registered (login limit)."""
        self.settings = settings
        app.extensions["statsapi.ratelimits"] = self
        storage = f"statsapi+{settings.redis_url}" if settings.redis_url else "memory://"
        app.config.update(
            RATELIMIT_ENABLED=settings.ratelimit_enabled,
            RATELIMIT_STORAGE_URI=storage,
            RATELIMIT_STRATEGY="fixed-window",
            RATELIMIT_SWALLOW_ERRORS=True,
        )
        if settings.redis_url:
            app.config["RATELIMIT_STORAGE_OPTIONS"] = {
                "key_prefix": f"{settings.redis_key_prefix}limits",
                "socket_timeout": settings.redis_socket_timeout,
                "socket_connect_timeout": settings.redis_socket_timeout,
                "health_check_interval": 30,
            }
        self.limiter.init_app(app)
        self.limiter.request_filter(lambda: request.endpoint in EXEMPT_ENDPOINTS)
        app.before_request(self._remember_application_limits)  # runs after the limiter's check
        # Login: per IP + username, on top of the application-wide anonymous per-IP
        # limit, so neither one username from many IPs nor many usernames from one IP
        # gets unbounded guesses.
        # One budget ("login" scope) for both ways to log in, so alternating between them
        # buys no extra guesses.
        self._guard(app, LOGIN_ENDPOINT, login_key, scope="login")
        self._guard(app, TOKEN_ENDPOINT, login_key, scope="login")
        # Changing the password proves the current one: the same budget, per user, so a
        # stolen access token cannot become an unlimited password-guessing oracle.
        self._guard(app, PASSWORD_ENDPOINT, lambda: f"password:{request_key()}")
        app.after_request(self._headers)

    def _guard(self, app: Flask, endpoint: str, key_func: Any, scope: str | None = None) -> None:
        view: Any = app.view_functions[endpoint]
        limit = (
            self.limiter.shared_limit(self.login_limit, scope, key_func=key_func, methods=["POST"])
            if scope
            else self.limiter.limit(self.login_limit, key_func=key_func, methods=["POST"])
        )
        app.view_functions[endpoint] = limit(view)

    def _remember_application_limits(self) -> None:
        # A route's own limits (login) replace the application-wide ones in flask-limiter's
        # request context; keep both, so the headers describe every limit that applied.
        g.rate_limits_seen = list(self.limiter.current_limits)

    def _headers(self, response: Response) -> Response:
        if not self.limiter.enabled:
            return response
        applied = {lim.key: lim for lim in (*g.get("rate_limits_seen", ()), *self.limiter.current_limits)}
        if not applied:
            return response
        try:
            states = [(lim, lim.reset_at, max(lim.remaining, 0)) for lim in applied.values()]
        except Exception:  # storage hiccup between hit and stats: headers are best effort
            return response
        # Report the limit that binds: the one that was breached, else the one nearest to it.
        breached = [state for state in states if state[0].breached]
        current, reset_at, remaining = min(breached or states, key=lambda s: (s[2], s[0].limit.get_expiry()))
        seconds_left = max(int(reset_at - time.time()), 0)
        response.headers["RateLimit-Policy"] = ", ".join(
            f'"{self._policy_name(lim)}";q={lim.limit.amount};w={lim.limit.get_expiry()}'
            for lim, _, _ in states
        )
        response.headers["RateLimit"] = f'"{self._policy_name(current)}";r={remaining};t={seconds_left}'
        response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(reset_at)
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(seconds_left, 1))
            RATE_LIMITED.labels(route=request.url_rule.rule if request.url_rule else "unmatched").inc()
        return response

    @staticmethod
    def _policy_name(limit: RequestLimit) -> str:
        window = _GRANULARITY_NAMES.get(limit.limit.get_expiry(), f"{limit.limit.get_expiry()}s")
        tier = next(
            (
                name
                for name in ("login", "password")
                if any(str(a).startswith(f"{name}:") for a in limit.request_args)
            ),
            _identity()[1],
        )
        return f"{tier}-{window}"
