"""What happens once an app is built, depending on why it was built.

``create_app`` runs for the server (``flask run``, gunicorn), for a CLI command
(``flask seed``) and for ``flask --help`` (Flask builds the app to list its commands).
Only the server announces things (the generated signing key, the first admin's password,
a database that cannot serve); a command migrates the embedded database silently, and
help touches nothing, so reading ``--help`` on a fresh clone can never use up the
one-time display of the admin password.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from pathlib import Path
from typing import Literal, TextIO

import click
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .config import Settings
from .db import check_database, describe_failure, get_database
from .migrate import upgrade
from .models import User
from .services import users

log = logging.getLogger(__name__)

Invocation = Literal["serve", "command", "help"]
# flask's own options that take a value (the next word is not a command name).
_FLASK_VALUE_OPTIONS = {"-A", "--app", "-e", "--env-file"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LISTENING = re.compile(r"Running on (https?://\S+)")
RECOVER_HINT = "lost the admin password? reset it with: flask --app statsapi set-password {username}"


def invocation(argv: list[str] | None = None) -> Invocation:
    """Why the app is being built: to serve, to run a CLI command, or to print help."""
    context = click.get_current_context(silent=True)
    if context is None and argv is None:
        return "serve"  # gunicorn, a WSGI import, or create_app() called from code
    if context is not None and context.command.name == "run":
        return "serve"  # `flask run` builds the app inside its own command
    args = sys.argv[1:] if argv is None else argv
    command = None
    words = iter(args)
    for word in words:
        if word in _FLASK_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            command = word
            break
    if command is None or "--help" in args:
        return "help"
    return "serve" if command == "run" else "command"


class _PlainText(logging.Formatter):
    """The dev server's lines as it writes them, colour codes kept only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__("%(message)s")
        self._colour = stream.isatty()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        text = text if self._colour else _ANSI.sub("", text)
        listening = _LISTENING.search(_ANSI.sub("", text))
        if listening:  # where the admin console is, right under where the server listens
            text += f"\n * Admin console: {listening.group(1)}/admin"
        return text


def plain_dev_server_log() -> None:
    """Development only: werkzeug's banner ("Running on http://...") as readable text on
    stderr, not a JSON line with raw ANSI codes. Production logs stay JSON."""
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.handlers[:] = [h for h in werkzeug.handlers if not getattr(h, "statsapi_plain", False)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PlainText(sys.stderr))
    handler.statsapi_plain = True  # type: ignore[attr-defined]
    werkzeug.addHandler(handler)
    werkzeug.propagate = False


def start(app: Flask, why: Invocation | None = None) -> None:
    """Run the start-up steps that fit this invocation (see the module docstring)."""
    settings: Settings = app.extensions["statsapi.settings"]
    why = why or invocation()
    if why == "help":
        return
    serving = why == "serve"
    if serving and settings.env == "development":
        plain_dev_server_log()
    if serving and settings.jwt_secret_generated:
        log.warning(
            "JWT_SECRET_KEY is not set: using a random key for this process only "
            "(tokens die on restart). Set JWT_SECRET_KEY outside development."
        )
    if settings.env == "development" and settings.uses_sqlite:
        try:
            prepare_embedded(app, announce=serving)
        except (SQLAlchemyError, OSError) as error:
            # The embedded default cannot work without its file: stop with one line, no traceback.
            if isinstance(error, OSError):
                reason = f"cannot create {error.filename or settings.instance_path}: {error.strerror}"
            else:
                reason = describe_failure(error, settings.database_url)
            print(f"statsapi: database: {reason}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    elif serving and settings.env != "testing":
        report_database(app)


def report_database(app: Flask) -> bool:
    """One log line saying why the database cannot serve, if it cannot (no traceback).
    The server starts anyway: it answers 503 until the database is fixed, then recovers."""
    problem = check_database(get_database(app).engine, app.extensions.get("statsapi.migration_head"))
    if problem is None:
        return True
    log.error("database: %s", problem[1], extra={"dependency": "database", "reason": problem[0]})
    return False


def prepare_embedded(app: Flask, *, announce: bool = True) -> None:
    """First run of the embedded default: migrate the SQLite file; when serving, create
    the first admin and print its password once (or, later, how to recover it)."""

    settings: Settings = app.extensions["statsapi.settings"]
    Path(settings.instance_path).mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    if not announce:
        return
    session = get_database(app).new_session()
    try:
        admin = session.scalar(select(User.username).where(User.role == "admin").order_by(User.id).limit(1))
        if session.scalar(select(func.count()).select_from(User)):
            if admin:
                hint = RECOVER_HINT.format(username=admin)
            else:
                hint = "no admin user yet: create one with: flask --app statsapi create-admin"
            print(f"  statsapi: {hint}", file=sys.stderr, flush=True)
            return
        username = settings.bootstrap_admin_username or "admin"
        password = settings.bootstrap_admin_password or secrets.token_urlsafe(18)
        with app.app_context():
            users.create(session, actor_id=None, username=username, password=password, role="admin")
        session.commit()
    finally:
        session.close()
    if not settings.bootstrap_admin_password:
        print(
            "\n  statsapi first run: created admin user\n"
            f"    username: {username}\n    password: {password}\n"
            "  (shown once; change it with POST /api/auth/password, or later with\n"
            f"   flask --app statsapi set-password {username})\n",
            file=sys.stderr,
            flush=True,
        )
    log.info("first admin created", extra={"username": username})
