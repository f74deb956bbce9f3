"""The request's database session, and the commit where a view makes it.

A session is opened on first use and closed at teardown, rolling back whatever was not
committed. A view that writes is decorated ``@blp.commits``: its unit of work commits
once, after the response is built, so the record, its audit event and its idempotency
entry land together or not at all. Every other route only reads: its session runs on an
autocommit connection (no BEGIN/COMMIT round trips) and refuses to flush a write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from ..db import Database
from .current import current_g

F = Callable[..., Any]


def database() -> Database:
    db: Database = current_app.extensions["statsapi.db"]
    return db


def session() -> Session:
    """The request's session: transactional when the route commits, else read-only."""
    db_session: Session | None = g.get("db_session")
    if db_session is None:
        writes = getattr(g.get("route"), "commits", False)
        db_session = database().new_session(read_only=not writes, request_id=g.get("request_id"))
        g.db_session = db_session
    return db_session


def commit() -> None:
    """Commit the request's unit of work if one was opened."""
    db_session: Session | None = g.get("db_session")
    if db_session is not None:
        db_session.commit()


def commits(func: F) -> F:
    """Commit the view's unit of work after its response is built (the route writes)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        response = func(*args, **kwargs)
        commit()
        return response

    wrapper._statsapi_commits = True  # type: ignore[attr-defined]
    return wrapper


def _close(_exc: BaseException | None) -> None:
    db_session: Session | None = current_g().pop("db_session", None)
    if db_session is not None:
        db_session.close()


def init_app(app: Flask, db: Database) -> None:
    app.extensions["statsapi.db"] = db
    app.teardown_appcontext(_close)
