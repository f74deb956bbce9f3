"""SQLAlchemy base, engine and the per-request session.

One engine per app, one session per request (created lazily, closed at teardown).
Services receive the session as a keyword argument and never commit: the view's
response decorator commits once, after the response body is built, so a request is one
transaction (the record, its audit event and its idempotency entry land together).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from .config import Settings
from .metrics import DEGRADED_EVENTS, DEPENDENCY_UP

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both databases.

    PostgreSQL stores ``timestamptz``; SQLite stores the naive UTC value as text, which
    sorts and compares correctly because every value is normalised to UTC first.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


NOT_MIGRATED = "schema not migrated: run `flask --app statsapi db upgrade`"

# What a database failure means for the operator: a short kind (what /ready publishes)
# and one line that says why (what the log says). Anything unrecognised is "error".
UNREACHABLE, AUTH_FAILED, MISSING_DATABASE, NOT_MIGRATED_KIND, ERROR = (
    "unreachable",
    "auth_failed",
    "missing_database",
    "not_migrated",
    "error",
)
_MISSING_DATABASE = re.compile(r'database "([^"]*)" does not exist')
_MISSING_ROLE = re.compile(r'role "([^"]*)" does not exist')
_BAD_PASSWORD = re.compile(r'password authentication failed for user "([^"]*)"')
_UNREACHABLE_HINTS = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "timeout expired",
    "no route to host",
    "network is unreachable",
    "server closed the connection",
    "connection timed out",
    "name or service not known",
)
# SQLSTATE 42P01 undefined_table, 42703 undefined_column: the schema is older than the code.
_SCHEMA_BEHIND_CODES = {"42P01", "42703"}


def _where(url: str | URL | None) -> str:
    if url is None:
        return "the configured address"
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception:  # an unparsable URL has no address to show
        return "the configured address"
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def classify_failure(error: BaseException, url: str | URL | None = None) -> tuple[str, str]:
    """``(kind, one line)`` for a failed database operation; never a traceback.

    ``url`` (the engine's) names the address in "unreachable at host:port", which the
    driver's message does not always carry (an unknown host name, a timeout).
    """
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    if isinstance(error, ArgumentError | NoSuchModuleError):
        return ERROR, "DATABASE_URL is not a usable database URL (postgresql://... or sqlite:///...)"
    if isinstance(error, PoolTimeoutError):
        return UNREACHABLE, "no free connection in the pool in time (too many slow requests)"
    orig = getattr(error, "orig", None) or error
    message = " ".join(str(orig).split())
    lowered = message.lower()
    if getattr(orig, "pgcode", None) in _SCHEMA_BEHIND_CODES or "no such table" in lowered:
        return NOT_MIGRATED_KIND, NOT_MIGRATED
    if found := _MISSING_DATABASE.search(message):
        return MISSING_DATABASE, f'database "{found.group(1)}" does not exist'
    if found := _BAD_PASSWORD.search(message):
        return AUTH_FAILED, f'authentication failed for user "{found.group(1)}" (wrong password)'
    if found := _MISSING_ROLE.search(message):
        return AUTH_FAILED, f'authentication failed: role "{found.group(1)}" does not exist'
    if "authentication" in lowered or "no password supplied" in lowered or "pg_hba.conf" in lowered:
        return AUTH_FAILED, "authentication failed"
    if "unable to open database file" in lowered:
        return UNREACHABLE, f"cannot open the SQLite file {_where(url)} (does its directory exist?)"
    if any(hint in lowered for hint in _UNREACHABLE_HINTS):
        return UNREACHABLE, f"unreachable at {_where(url)}"
    first_line = message.split(" LINE ")[0][:200]
    return ERROR, f"{orig.__class__.__name__}: {first_line}" if first_line else orig.__class__.__name__


def describe_failure(error: BaseException, url: str | URL | None = None) -> str:
    """One line saying why the database failed, e.g. 'database "x" does not exist'."""
    return classify_failure(error, url)[1]


def check_database(engine: Engine, head: str | None) -> tuple[str, str] | None:
    """None when the database answers and is migrated to ``head``, else ``(kind, one line)``."""
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as error:  # every failure becomes one classified line
        return classify_failure(error, engine.url)
    if revision is None:
        return NOT_MIGRATED_KIND, NOT_MIGRATED
    if head is not None and revision != head:
        return (
            NOT_MIGRATED_KIND,
            f"schema at {revision}, code expects {head}: run `flask --app statsapi db upgrade`",
        )
    return None


class DatabaseHealth:
    """Up/down state of PostgreSQL as requests see it: logged and exported on transitions
    only (a successful connection checkout marks it up, a connection error down)."""

    def __init__(self, url: str | URL | None = None) -> None:
        self._url = url
        self._up = True
        self._lock = threading.Lock()

    @property
    def is_up(self) -> bool:
        return self._up

    def ok(self, *_: Any) -> None:
        if not self._up:
            with self._lock:
                if not self._up:
                    self._up = True
                    DEPENDENCY_UP.labels(dependency="database").set(1)
                    log.info("database recovered", extra={"dependency": "database"})

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._up:
                self._up = False
                DEPENDENCY_UP.labels(dependency="database").set(0)
                DEGRADED_EVENTS.labels(dependency="database").inc()
            log.error(
                "database unavailable (%s): requests get 503",
                describe_failure(error, self._url),
                extra={"dependency": "database", "reason": error.__class__.__name__},
            )


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        # One file, many threads (flask run, tests); short-lived connections keep WAL happy.
        engine = create_engine(
            url,
            hide_parameters=True,  # errors and logs never carry bound values (hashes, text)
            connect_args={"check_same_thread": False, "timeout": 15},
            poolclass=NullPool,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,  # recover by itself after PostgreSQL restarts
        pool_recycle=1800,
        pool_timeout=5,
        connect_args={
            "connect_timeout": 3,
            "application_name": "statsapi",
            # UTC sessions make date_trunc() group by UTC days and months.
            "options": f"-c timezone=UTC -c statement_timeout={settings.db_statement_timeout_ms}",
        },
    )
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


class Database:
    """Engine, session factory and post-commit hooks for one app."""

    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings)
        self.health = DatabaseHealth(self.engine.url)
        event.listen(self.engine, "checkout", self.health.ok)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._after_commit_hooks: list[Callable[[Session], None]] = []
        event.listen(self.session_factory, "after_commit", self._run_after_commit)
        # A rolled-back transaction changed nothing: forget what it would have changed.
        event.listen(self.session_factory, "after_rollback", pop_changed_owners)

    def on_after_commit(self, hook: Callable[[Session], None]) -> None:
        """Run ``hook(session)`` after every commit (e.g. stats cache invalidation)."""
        self._after_commit_hooks.append(hook)

    def _run_after_commit(self, session: Session) -> None:
        for hook in self._after_commit_hooks:
            hook(session)

    def new_session(self, **info: Any) -> Session:
        session = self.session_factory()
        session.info.update(info)
        return session

    def dispose(self) -> None:
        self.engine.dispose()


def init_app(app: Flask, settings: Settings) -> Database:
    database = Database(settings)
    app.extensions["statsapi.db"] = database
    app.teardown_appcontext(_close_session)
    return database


def get_database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions["statsapi.db"]


def session() -> Session:
    """The request's session, opened on first use."""
    if "db_session" not in g:
        g.db_session = get_database().new_session(request_id=g.get("request_id"))
    return g.db_session


def commit() -> None:
    """Commit the request's unit of work if one was opened."""
    if "db_session" in g:
        g.db_session.commit()


def _close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()  # rolls back anything not committed


def mark_owners_changed(db_session: Session, owner_ids: Iterable[int]) -> None:
    """Note record owners whose stats a pending commit changes (read after commit)."""
    db_session.info.setdefault("changed_owners", set()).update(owner_ids)


def pop_changed_owners(db_session: Session) -> set[int]:
    return db_session.info.pop("changed_owners", set())


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (a ``CursorResult``)."""
    return int(result.rowcount)
