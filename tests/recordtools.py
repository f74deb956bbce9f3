"""Helpers shared by the records, pagination, idempotency and stats tests."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from flask import Flask
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from statsapi.clock import utcnow
from statsapi.db import get_database
from statsapi.models import AuditEvent, Record
from statsapi.money import parse_amount

from .conftest import owner_engine
from .factories import Actor

T = TypeVar("T")

PROBLEM = "application/problem+json"


def assert_problem(
    response: TestResponse, status: int, slug: str | None = None, *, errors: Sequence[str] | None = None
) -> dict[str, Any]:
    """An RFC 9457 body with this status (and type ``/problems/<slug>``, and exactly these error keys)."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    if errors is not None:
        assert sorted(body.get("errors", {})) == sorted(errors), body
    return body


@contextlib.contextmanager
def db_session(app: Flask) -> Iterator[Session]:
    session = get_database(app).new_session()
    try:
        yield session
    finally:
        session.close()


def record_count(app: Flask, *, owner_id: int | None = None) -> int:
    with db_session(app) as session:
        query = select(func.count()).select_from(Record)
        if owner_id is not None:
            query = query.where(Record.owner_id == owner_id)
        return int(session.scalar(query) or 0)


def audit_events(app: Flask, *, action: str | None = None) -> list[AuditEvent]:
    with db_session(app) as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        return list(session.scalars(query))


def insert_records(app: Flask, owner_id: int, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Bulk-insert records straight into the table (fast seeding; no audit events).

    Each row: ``amount`` (decimal string), ``currency``, ``category``, ``occurred_at``
    (aware datetime) and optionally ``description``. Returns the ids in row order.
    """
    now = utcnow()
    values = [
        {
            "owner_id": owner_id,
            "amount_minor": parse_amount(row["amount"], row["currency"]),
            "currency": row["currency"],
            "category": row["category"],
            "occurred_at": row["occurred_at"],
            "description": row.get("description"),
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        for row in rows
    ]
    with db_session(app) as session:
        ids = list(session.scalars(insert(Record).returning(Record.id, sort_by_parameter_order=True), values))
        session.commit()
    return ids


@contextlib.contextmanager
def captured_sql(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (and its parameters) the app's engines (read and write) execute
    inside the block."""
    statements: list[tuple[str, Any]] = []
    database = get_database(app)
    engines = (database.engine, database.read_engine)

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)


def explain(app: Flask, statement: str, parameters: Any) -> str:
    """PostgreSQL's plan (text) for a captured psycopg2 statement."""
    raw = get_database(app).engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.close()
        raw.rollback()
        return plan
    finally:
        raw.close()


def analyze(app: Flask) -> None:
    # ANALYZE is the table owner's, not the app role's.
    with owner_engine(app).connect() as conn:
        conn.execute(text("ANALYZE records"))
        conn.commit()


def with_client(actor: Actor, app: Flask) -> Actor:
    """The same user and token on a client of its own (test clients are not thread-safe)."""
    return dataclasses.replace(actor, client=app.test_client())


def run_concurrently(calls: Sequence[Callable[[], T]], timeout: float = 60) -> list[T]:
    """Start every call at the same moment (a barrier) in its own thread; results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]
