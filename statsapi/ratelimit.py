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
from flask import Flask, Response, g, request
from flask_limiter import Limiter, RequestLimit
from limits import RateLimitItem

from .config import Settings
from .metrics import RATE_LIMITED
from .models import Role
from .security import peek_identity

LOGIN_ENDPOINT = "auth.Login"
EXEMPT_ENDPOINTS = frozenset({"ops.health", "metrics", "docs.asset", "static"})
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
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    name = username.strip().lower()[:64] if isinstance(username, str) else "-"
    return f"login:{request.remote_addr or 'unknown'}:{name}"


def _is_login_key(key: str) -> bool:
    return key.startswith("login:")


class RateLimits:
    """The limiter plus statsapi's tiers and headers."""

    def __init__(self) -> None:
        self.limiter = Limiter(
            key_func=request_key,
            default_limits=[self._tier_limit],
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
        storage = settings.redis_url or "memory://"
        app.config.update(
            RATELIMIT_ENABLED=settings.ratelimit_enabled,
            RATELIMIT_STORAGE_URI=storage,
            RATELIMIT_KEY_PREFIX=f"{settings.redis_key_prefix}rl",
            RATELIMIT_STRATEGY="fixed-window",
            RATELIMIT_SWALLOW_ERRORS=True,
        )
        if settings.redis_url:
            app.config["RATELIMIT_STORAGE_OPTIONS"] = {
                "socket_timeout": settings.redis_socket_timeout,
                "socket_connect_timeout": settings.redis_socket_timeout,
                "health_check_interval": 30,
            }
        self.limiter.init_app(app)
        self.limiter.request_filter(lambda: request.endpoint in EXEMPT_ENDPOINTS)
        # Login: per IP + username on top of the anonymous per-IP limit (override_defaults
        # False), so neither one username from many IPs nor many usernames from one IP
        # gets unbounded guesses.
        app.view_functions[LOGIN_ENDPOINT] = self.limiter.limit(
            self.login_limit, key_func=login_key, methods=["POST"], override_defaults=False
        )(app.view_functions[LOGIN_ENDPOINT])
        app.after_request(self._headers)

    def _headers(self, response: Response) -> Response:
        if not self.limiter.enabled:
            return response
        current: RequestLimit | None = self.limiter.current_limit
        if current is None:
            return response
        try:
            reset_at, remaining = current.reset_at, max(current.remaining, 0)
        except Exception:  # storage hiccup between hit and stats: headers are best effort
            return response
        item: RateLimitItem = current.limit
        window = item.get_expiry()
        seconds_left = max(int(reset_at - time.time()), 0)
        name = self._policy_name(current)
        response.headers["RateLimit-Policy"] = (
            ", ".join(
                f'"{self._policy_name(lim)}";q={lim.limit.amount};w={lim.limit.get_expiry()}'
                for lim in self.limiter.current_limits
            )
            or f'"{name}";q={item.amount};w={window}'
        )
        response.headers["RateLimit"] = f'"{name}";r={remaining};t={seconds_left}'
        response.headers["X-RateLimit-Limit"] = str(item.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(reset_at)
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(seconds_left, 1))
            RATE_LIMITED.labels(route=request.url_rule.rule if request.url_rule else "unmatched").inc()
        return response

    @staticmethod
    def _policy_name(limit: RequestLimit) -> str:
        window = _GRANULARITY_NAMES.get(limit.limit.get_expiry(), f"{limit.limit.get_expiry()}s")
        tier = "login" if any(_is_login_key(str(a)) for a in limit.request_args) else _identity()[1]
        return f"{tier}-{window}"

    def storage_healthy(self) -> bool:
        """False while flask-limiter runs on its in-process fallback."""
        return not getattr(self.limiter, "_storage_dead", False)

