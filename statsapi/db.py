"""SQLAlchemy base, engine and the per-request session.

One engine per app, one session per request (created lazily, closed at teardown).
Services receive the session as a keyword argument and never commit: the view's
response decorator commits once, after the response body is built, so a request is one
transaction (the record, its audit event and its idempotency entry land together).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event, text
from sqlalchemy.engine import Dialect, Engine
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


class DatabaseHealth:
    """Up/down state of PostgreSQL as requests see it: logged and exported on transitions
    only (a successful connection checkout marks it up, a connection error down)."""

    def __init__(self) -> None:
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
                "database unavailable: requests get 503",
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
        self.health = DatabaseHealth()
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


def database_identity(engine: Engine) -> str:
    """This database's identity: the random UUID migration 0003 stored in ``deployment``.

    One query (read it once, at start-up). Raises ``LookupError`` when the row is missing and
    SQLAlchemy's error when the database is unreachable or not migrated that far.
    """
    with engine.connect() as conn:
        identity = conn.execute(text("SELECT identity FROM deployment WHERE id = 1")).scalar_one_or_none()
    if not identity:
        raise LookupError("the deployment table has no identity row: run `flask --app statsapi db upgrade`")
    return str(identity)


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (a ``CursorResult``)."""
    return int(result.rowcount)
