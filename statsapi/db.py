"""SQLAlchemy base, engine, sessions and what a unit of work changed (Flask-free).

One engine per app. Services receive a session as a keyword argument and never commit;
``http.transaction`` opens the request's session and the views that write commit it.
A unit of work notes what it changed that caches must hear about (record owners whose
stats moved, users whose token state changed, revoked login families); the cache
wiring (``state.backends``) publishes those notes around the commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, object_session, sessionmaker
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


def make_engine(settings: Settings, *, autocommit: bool = False) -> Engine:
    """The app's engine; ``autocommit`` for read-only work (its own pool, so a connection
    never switches modes: switching costs a ``SET`` round trip each way on PostgreSQL)."""
    url = settings.database_url
    modes: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        # One file, many threads (flask run, tests); short-lived connections keep WAL happy.
        engine = create_engine(
            url,
            hide_parameters=True,  # errors and logs never carry bound values (hashes, text)
            connect_args={"check_same_thread": False, "timeout": 15},
            poolclass=NullPool,
            **modes,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=1800,
        pool_timeout=5,
        **modes,
        connect_args={
            "connect_timeout": 3,
            "application_name": "statsapi",
            # UTC sessions make date_trunc() group by UTC days and months.
            "options": f"-c timezone=UTC -c statement_timeout={settings.db_statement_timeout_ms}",
        },
    )
    # Recover by itself after PostgreSQL restarts, without a ping per request: a connection
    # that sat idle for a while is pinged at checkout, a busy one is trusted (a failure
    # there still invalidates the pool, see http.errors).
    event.listen(engine, "checkout", _ping_if_idle)
    event.listen(engine, "checkin", _note_last_use)
    return engine


IDLE_BEFORE_PING_SECONDS = 2.0


def _note_last_use(_dbapi_connection: Any, record: Any) -> None:
    record.info["last_use"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    if time.monotonic() - record.info.get("last_use", 0.0) < IDLE_BEFORE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    except Exception as error:
        # The pool discards this connection and checks out (or opens) another one.
        raise DisconnectionError(str(error)) from error


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


class Database:
    """Engine, session factories and post-commit hooks for one app.

    Read-only sessions run on autocommit connections (a pool of their own): a read sends
    its statements and nothing else (no BEGIN, no COMMIT), and refuses to flush any write.
    """

    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings)
        self.read_engine = make_engine(settings, autocommit=True)
        self.health = DatabaseHealth()
        for engine in (self.engine, self.read_engine):
            event.listen(engine, "checkout", self.health.ok)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.read_session_factory = sessionmaker(bind=self.read_engine, expire_on_commit=False)
        event.listen(self.read_session_factory, "before_flush", _refuse_writes)
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

    def new_session(self, *, read_only: bool = False, **info: Any) -> Session:
        session = (self.read_session_factory if read_only else self.session_factory)()
        session.info.update(info)
        return session

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("a read-only session cannot write: the route must commit (@blp.commits)")


def get_database(app: Any) -> Database:
    """The ``Database`` bound to a Flask app (``http.transaction.database()`` in a request)."""
    database: Database = app.extensions["statsapi.db"]
    return database


# -- what a unit of work changed (read around its commit by the cache wiring) ----------
def mark_owners_changed(db_session: Session, owner_ids: Iterable[int]) -> None:
    """Note record owners whose stats a pending commit changes (read after commit)."""
    db_session.info.setdefault("changed_owners", set()).update(owner_ids)


def pop_changed_owners(db_session: Session) -> set[int]:
    return db_session.info.pop("changed_owners", set())


def note_user_changed(user: Any) -> None:
    """Call after changing a user's role, active flag or generation (before commit)."""
    db_session = object_session(user)
    assert db_session is not None
    db_session.info.setdefault("auth_users", {})[user.id] = user


def note_family_revoked(db_session: Session, family_id: str) -> None:
    db_session.info.setdefault("auth_families", set()).add(family_id)


def token_changes(db_session: Session, *, pop: bool) -> tuple[dict[int, Any], set[str]]:
    """Users and families whose token state this unit of work changed (``pop`` to clear)."""
    take = db_session.info.pop if pop else db_session.info.get
    return take("auth_users", {}), take("auth_families", set())


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (a ``CursorResult``)."""
    return int(result.rowcount)
