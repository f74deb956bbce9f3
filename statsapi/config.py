"""Settings from the environment, typed and validated once at start-up.

Two run modes (SPEC §2):

* the embedded default: SQLite in ``instance/``, in-process limits and cache, a
  generated signing key with a logged warning;
* ``STATSAPI_ENV=production``: PostgreSQL, Redis and a strong ``JWT_SECRET_KEY`` are
  required, and start-up stops with one clear line when one is missing or weak.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import find_dotenv, load_dotenv
from limits import parse_many

ENVIRONMENTS = ("development", "production", "testing")

# Values people paste from tutorials; a production key must never be one of them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "super-secret",
        "supersecret",
        "jwt-secret",
        "jwt_secret_key",
        "your-secret-key",
        "your_secret_key",
        "please-change-me",
        "replace-me",
        "dev",
        "development",
        "test",
        "password",
    }
)
MIN_SECRET_BYTES = 32
# Prometheus scrapes from the private network; nobody else may read /metrics.
# The largest batch (schemas.records.MAX_BATCH; kept here so settings load without the schemas).
FULL_BATCH = 1000
DEFAULT_METRICS_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


class ConfigError(RuntimeError):
    """A required setting is missing or unsafe; the message is one line for the operator."""


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _int(value: str, name: str, *, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {number}")
    return number


def _looks_placeholder(secret: str) -> bool:
    normalised = secret.strip().lower()
    if normalised in PLACEHOLDER_SECRETS:
        return True
    # "changeme-changeme-changeme-changeme" is as known as "changeme": look inside too
    # (words of 6+ letters only, which random keys practically never contain).
    letters = re.sub(r"[^a-z0-9]", "", normalised)
    if any(len(word) >= 6 and re.sub(r"[^a-z0-9]", "", word) in letters for word in PLACEHOLDER_SECRETS):
        return True
    # "aaaaaaaa...", "xxxx..." and the like carry no entropy whatever their length.
    return len(set(normalised)) < 8


def _access_log_flush(get: Any, *, production: bool) -> float:
    """Seconds access lines may wait in memory (0: each is written as its request ends).
    Production buffers them, like nginx's ``access_log ... flush=``: see ``logs.AccessLines``."""
    raw = get("ACCESS_LOG_FLUSH_SECONDS", "").strip()
    if not raw:
        return 0.5 if production else 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"ACCESS_LOG_FLUSH_SECONDS must be a number, got {raw!r}") from None
    if not 0 <= seconds <= 10:
        raise ConfigError(f"ACCESS_LOG_FLUSH_SECONDS must be between 0 and 10, got {raw!r}")
    return seconds


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob statsapi reads from the environment (see ``.env.example``)."""

    env: str = "development"
    database_url: str = ""
    redis_url: str = ""
    redis_key_prefix: str | None = None  # None: statsapi:<database identity>: (state.redis.KeySpace)
    redis_socket_timeout: float = 0.25
    jwt_secret_key: str = ""
    jwt_previous_secret_keys: tuple[str, ...] = ()
    jwt_secret_generated: bool = False
    access_token_minutes: int = 15
    refresh_token_days: int = 14
    trusted_proxy_hops: int = 0
    ratelimit_enabled: bool = True
    ratelimit_login: str = "5/minute;30/hour"
    ratelimit_anonymous: str = "60/minute"
    ratelimit_user: str = "300/minute"
    ratelimit_elevated: str = "1200/minute"
    ratelimit_records: str = "2000/minute;20000/hour"
    quota_records_per_day: int = 100_000
    idempotency_replay_max_bytes: int = 64 * 1024
    idempotency_max_keys: int = 10_000
    stats_cache_ttl_seconds: int = 300
    docs_enabled: bool = True
    max_content_length: int = 1024 * 1024
    log_level: str = "INFO"
    access_log_flush_seconds: float = 0.0
    db_statement_timeout_ms: int = 15000
    db_pool_size: int = 5
    metrics_allowed_networks: tuple[str, ...] = DEFAULT_METRICS_NETWORKS
    bootstrap_admin_username: str = ""
    bootstrap_admin_password: str = ""
    instance_path: str = ""

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings; raise ConfigError with one clear line.

        Without an explicit mapping, a ``.env`` file (see :func:`load_dotenv_file`) fills in
        what the environment does not set.
        """
        if environ is None:
            load_dotenv_file()
        env_vars = dict(os.environ if environ is None else environ)
        get = env_vars.get
        env = get("STATSAPI_ENV", "development").strip().lower()
        if env not in ENVIRONMENTS:
            raise ConfigError(f"STATSAPI_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
        production = env == "production"
        instance_path = get("STATSAPI_INSTANCE_PATH", str(Path.cwd() / "instance"))
        database_url = _database_url(get("DATABASE_URL", "").strip(), instance_path, production=production)
        redis_url = get("REDIS_URL", "").strip()
        if production and not redis_url:
            raise ConfigError("REDIS_URL is required in production (limits, cache, token state)")
        secret, previous, generated = _signing_secrets(get, production=production)

        log_level = get("LOG_LEVEL", "INFO").strip().upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")

        settings = cls(
            env=env,
            database_url=database_url,
            redis_url=redis_url,
            redis_key_prefix=get("REDIS_KEY_PREFIX") or None,
            redis_socket_timeout=_float(get("REDIS_SOCKET_TIMEOUT", "0.25"), "REDIS_SOCKET_TIMEOUT"),
            jwt_secret_key=secret,
            jwt_previous_secret_keys=previous,
            jwt_secret_generated=generated,
            **_tunables(get),
            log_level=log_level,
            access_log_flush_seconds=_access_log_flush(get, production=production),
            metrics_allowed_networks=_networks(
                get("METRICS_ALLOWED_NETWORKS", ",".join(DEFAULT_METRICS_NETWORKS))
            ),
            bootstrap_admin_username=get("BOOTSTRAP_ADMIN_USERNAME", ""),
            bootstrap_admin_password=get("BOOTSTRAP_ADMIN_PASSWORD", ""),
            instance_path=instance_path,
        )
        if production and not settings.ratelimit_enabled:
            raise ConfigError("RATELIMIT_ENABLED=false is not allowed in production")
        settings.validate_limits()
        return settings

    def validate_limits(self) -> None:
        names = ("ratelimit_login", "ratelimit_anonymous", "ratelimit_user", "ratelimit_elevated")
        for name in (*names, "ratelimit_records"):
            value = getattr(self, name)
            try:
                parse_many(value)
            except ValueError:
                raise ConfigError(f"{name.upper()} is not a rate limit string: {value!r}") from None
        # A limit below the largest batch would refuse a valid batch forever, never "retry later".
        if any(item.amount < FULL_BATCH for item in parse_many(self.ratelimit_records)):
            raise ConfigError(f"RATELIMIT_RECORDS: each limit must allow a full batch ({FULL_BATCH} records)")
        if self.quota_records_per_day < FULL_BATCH:
            raise ConfigError(f"QUOTA_RECORDS_PER_DAY must allow a full batch ({FULL_BATCH} records)")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_dotenv_file() -> str | None:
    """Load the nearest ``.env`` (from the working directory upwards) into ``os.environ``,
    the file ``flask`` itself loads, so gunicorn and the ``statsapi`` script see the same
    settings. Variables already set in the environment win; ``FLASK_SKIP_DOTENV=1`` skips
    it, as it does for ``flask``. Returns the file loaded, if any."""
    if _bool(os.environ.get("FLASK_SKIP_DOTENV", "false") or "false", "FLASK_SKIP_DOTENV"):
        return None
    path = find_dotenv(".env", usecwd=True)
    if not path:
        return None
    load_dotenv(path, override=False, encoding="utf-8")
    return path


def _networks(value: str) -> tuple[str, ...]:
    networks = tuple(part.strip() for part in value.split(",") if part.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            raise ConfigError(
                f"METRICS_ALLOWED_NETWORKS: {network!r} is not a network (e.g. 10.0.0.0/8)"
            ) from None
    return networks


def _float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not 0 < number <= 30:
        raise ConfigError(f"{name} must be between 0 and 30 seconds, got {value!r}")
    return number


def _check_strong_secret(secret: str, name: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes in production")
    if _looks_placeholder(secret):
        raise ConfigError(
            f"{name} is a known placeholder or low-entropy value; generate one with `openssl rand -base64 48`"
        )


_POSTGRES_SCHEME = re.compile(r"^postgres(ql)?(\+psycopg2)?://")


_URL_SCHEME = re.compile(r"^([a-z][a-z0-9]*)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def _check_database_url(url: str) -> None:
    """A URL SQLAlchemy cannot use fails here, in one line, not deep in create_engine.
    (Parsed by hand: importing SQLAlchemy here would slow every `flask --help`.)"""
    scheme = _URL_SCHEME.match(url)
    try:
        port = urllib.parse.urlsplit(url).port if scheme else None  # a non-numeric port raises
    except ValueError:
        scheme = None
    if scheme is None or (port is not None and not 0 < port < 65536):
        raise ConfigError(
            "DATABASE_URL is not a database URL (postgresql://user:password@host:5432/name "
            "or sqlite:///path); special characters in the password must be %-encoded"
        )
    backend = scheme.group(1).lower()
    if backend not in {"postgresql", "sqlite"}:
        raise ConfigError(f"DATABASE_URL must be postgresql://... or sqlite:///..., not {backend}://")


def _normalise_database_url(url: str) -> str:
    # Heroku/Render style "postgres://" URLs name the same thing; SQLAlchemy wants the full name.
    if _POSTGRES_SCHEME.match(url):
        return _POSTGRES_SCHEME.sub("postgresql+psycopg2://", url, count=1)
    return url


def _database_url(url: str, instance_path: str, *, production: bool) -> str:
    """DATABASE_URL, checked; the embedded SQLite file when unset outside production."""
    if not url:
        if production:
            raise ConfigError("DATABASE_URL is required in production (a PostgreSQL URL)")
        url = f"sqlite:///{Path(instance_path) / 'statsapi.db'}"
    url = _normalise_database_url(url)
    if production and not url.startswith("postgresql"):
        raise ConfigError("DATABASE_URL must be a PostgreSQL URL in production")
    _check_database_url(url)
    return url


def _signing_secrets(get: Any, *, production: bool) -> tuple[str, tuple[str, ...], bool]:
    """JWT_SECRET_KEY (generated outside production when unset), the previous keys, and
    whether the key was generated; production refuses weak or placeholder keys."""
    secret = get("JWT_SECRET_KEY", "").strip()
    generated = False
    if not secret:
        if production:
            raise ConfigError("JWT_SECRET_KEY is required in production (32+ random bytes)")
        secret = secrets.token_urlsafe(48)
        generated = True
    elif production:
        _check_strong_secret(secret, "JWT_SECRET_KEY")
    previous = tuple(k.strip() for k in get("JWT_PREVIOUS_SECRET_KEYS", "").split(",") if k.strip())
    if production:
        for key in previous:
            _check_strong_secret(key, "JWT_PREVIOUS_SECRET_KEYS")
    return secret, previous, generated


def _tunables(get: Any) -> dict[str, Any]:
    """Lifetimes, limits, sizes and switches: each with its default and its bounds."""
    return {
        "access_token_minutes": _int(
            get("JWT_ACCESS_TOKEN_MINUTES", "15"), "JWT_ACCESS_TOKEN_MINUTES", minimum=1
        ),
        "refresh_token_days": _int(get("JWT_REFRESH_TOKEN_DAYS", "14"), "JWT_REFRESH_TOKEN_DAYS", minimum=1),
        "trusted_proxy_hops": _int(get("TRUSTED_PROXY_HOPS", "0"), "TRUSTED_PROXY_HOPS"),
        "ratelimit_enabled": _bool(get("RATELIMIT_ENABLED", "true"), "RATELIMIT_ENABLED"),
        "ratelimit_login": get("RATELIMIT_LOGIN", "5/minute;30/hour"),
        "ratelimit_anonymous": get("RATELIMIT_ANONYMOUS", "60/minute"),
        "ratelimit_user": get("RATELIMIT_USER", "300/minute"),
        "ratelimit_elevated": get("RATELIMIT_ELEVATED", "1200/minute"),
        "ratelimit_records": get("RATELIMIT_RECORDS", "2000/minute;20000/hour"),
        "quota_records_per_day": _int(
            get("QUOTA_RECORDS_PER_DAY", "100000"), "QUOTA_RECORDS_PER_DAY", minimum=1
        ),
        "idempotency_max_keys": _int(get("IDEMPOTENCY_MAX_KEYS", "10000"), "IDEMPOTENCY_MAX_KEYS", minimum=1),
        "idempotency_replay_max_bytes": _int(
            get("IDEMPOTENCY_REPLAY_MAX_BYTES", str(64 * 1024)), "IDEMPOTENCY_REPLAY_MAX_BYTES", minimum=1024
        ),
        "stats_cache_ttl_seconds": _int(
            get("STATS_CACHE_TTL_SECONDS", "300"), "STATS_CACHE_TTL_SECONDS", minimum=1
        ),
        "docs_enabled": _bool(get("DOCS_ENABLED", "true"), "DOCS_ENABLED"),
        "max_content_length": _int(
            get("MAX_CONTENT_LENGTH", str(1024 * 1024)), "MAX_CONTENT_LENGTH", minimum=1024
        ),
        "db_statement_timeout_ms": _int(
            get("DB_STATEMENT_TIMEOUT_MS", "15000"), "DB_STATEMENT_TIMEOUT_MS", minimum=100
        ),
        "db_pool_size": _int(get("DB_POOL_SIZE", "5"), "DB_POOL_SIZE", minimum=1),
    }
