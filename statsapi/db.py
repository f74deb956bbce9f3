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
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import DeclarativeBase, Session, object_session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from .config import Settings
from .metrics import DEGRADED_EVENTS, DEPENDENCY_UP
from .schema_compat import SchemaCheck

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


def check_database(engine: Engine, schema: SchemaCheck | str | None) -> tuple[str, str] | None:
    """None when the database answers and this code may serve its schema (migrated to its
    head, or newer within the migration policy: ``statsapi.schema_compat``), else
    ``(kind, one line)``. A bare head accepts that revision only."""
    check = schema if isinstance(schema, SchemaCheck) else SchemaCheck.for_head(schema)
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            state = None if revision is None or check.head is None else check.state(conn, revision)
    except Exception as error:  # every failure becomes one classified line
        return classify_failure(error, engine.url)
    if revision is None:
        return NOT_MIGRATED_KIND, NOT_MIGRATED
    if state is not None and state.reason is not None:
        return NOT_MIGRATED_KIND, state.reason
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
        self.health = DatabaseHealth(self.engine.url)
        for engine in (self.engine, self.read_engine):
            event.listen(engine, "checkout", self.health.ok)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.read_session_factory = sessionmaker(bind=self.read_engine, expire_on_commit=False)
        event.listen(self.read_session_factory, "before_flush", _refuse_writes)
        self._after_commit_hooks: list[Callable[[Session], None]] = []
        self._on_dispose: list[Callable[[], None]] = []
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

    def on_dispose(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` when the engines are disposed (e.g. stop a listener thread)."""
        self._on_dispose.append(hook)

    def dispose(self) -> None:
        for hook in self._on_dispose:
            hook()
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


def database_identity(engine: Engine) -> str:
    """This database's identity: the random UUID migration 0004 stored in ``deployment``.

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
