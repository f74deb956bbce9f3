"""Command line: ``flask --app statsapi <command>``.

create-admin, create-user, set-password, seed, purge, db (Flask-Migrate: upgrade,
downgrade, current, history, revision --autogenerate, ...; plus grant-app-role) — and
``openapi write`` (from flask-smorest) to export the spec. A database failure ends a
command with one line saying why (statsapi.db.describe_failure), not a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from .clock import utcnow
from .config import Settings

# SQLAlchemy, the models and the schemas are imported inside the commands: `flask --help`
# lists the commands without loading any of them (see help_app).
ROLE_NAMES = ("user", "analyst", "admin")  # statsapi.models.ROLES (tests keep them equal)

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    return current_app.extensions["statsapi.settings"]


def database_errors_in_one_line(command: F) -> F:
    """A command whose database fails says why in one line (exit 1), e.g.
    'database "x" does not exist' or 'schema not migrated: run ...'."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        from .db import describe_failure, get_database

        try:
            return command(*args, **kwargs)
        except SQLAlchemyError as error:
            reason = describe_failure(error, get_database(current_app).engine.url)
            raise click.ClickException(f"database: {reason}") from None

    return run  # type: ignore[return-value]


def _read_password(password_stdin: bool, env_name: str | None) -> str:
    from .schemas.users import PASSWORD_MAX, PASSWORD_MIN

    if env_name:
        password = os.environ.get(env_name, "")
        if not password:
            raise click.UsageError(f"environment variable {env_name} is empty")
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX or not password.strip():
        raise click.UsageError(f"passwords are {PASSWORD_MIN}-{PASSWORD_MAX} characters")
    return password


def _create_user(username: str, password: str, role: str, if_missing: bool) -> None:
    from .db import get_database
    from .problems import Conflict
    from .schemas.users import USERNAME
    from .services import users

    if not USERNAME.fullmatch(username):
        raise click.UsageError("usernames are 3-64 letters, digits, '_', '.', '-'")
    session = get_database(current_app).new_session()
    try:
        if if_missing and users.find_by_username(session, username=username):
            click.echo(f"user {username.lower()!r} already exists; nothing to do")
            return
        try:
            user = users.create(session, actor_id=None, username=username, password=password, role=role)
        except Conflict as error:
            raise click.ClickException(error.detail) from None
        session.commit()
        click.echo(f"created {role} {user.username!r} (id {user.id})")
    finally:
        session.close()


@click.command("create-admin")
@click.option(
    "--username", default=lambda: os.environ.get("BOOTSTRAP_ADMIN_USERNAME") or "admin", show_default="admin"
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--password-env", metavar="NAME", help="Read the password from this environment variable.")
@click.option("--if-missing", is_flag=True, help="Succeed quietly when the user exists (compose bootstrap).")
@with_appcontext
@database_errors_in_one_line
def create_admin(username: str, password_stdin: bool, password_env: str | None, if_missing: bool) -> None:
    """Create an admin user."""
    if not password_env and not password_stdin and os.environ.get("BOOTSTRAP_ADMIN_PASSWORD"):
        password_env = "BOOTSTRAP_ADMIN_PASSWORD"  # noqa: S105 (a variable name, not a secret)
    _create_user(username, _read_password(password_stdin, password_env), "admin", if_missing)


@click.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLE_NAMES), default="user", show_default=True)
@click.option("--password-stdin", is_flag=True)
@click.option("--password-env", metavar="NAME")
@with_appcontext
@database_errors_in_one_line
def create_user(username: str, role: str, password_stdin: bool, password_env: str | None) -> None:
    """Create a user with a role."""
    _create_user(username, _read_password(password_stdin, password_env), role, False)


CATEGORIES = (
    "groceries",
    "rent",
    "salary",
    "utilities",
    "transport",
    "restaurants",
    "travel",
    "insurance",
    "healthcare",
    "entertainment",
    "education",
    "subscriptions",
    "fees",
    "refund",
)
CURRENCIES = (("EUR", 2), ("USD", 2), ("GBP", 2), ("JPY", 0), ("CHF", 2), ("BHD", 3))
DESCRIPTIONS = (None, "Card payment", "Bank transfer", "Direct debit", "Cash withdrawal", "Standing order")


def fake_records(owner_ids: list[int], count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Plausible transactions over the last two years, mostly debits."""
    now = utcnow()
    rows = []
    for _ in range(count):
        currency, digits = rng.choices(CURRENCIES, weights=(40, 30, 12, 8, 6, 4))[0]
        category = rng.choice(CATEGORIES)
        magnitude = int(rng.lognormvariate(3.5, 1.2) * 10**digits) + 1
        amount = magnitude if category in {"salary", "refund"} else -magnitude
        occurred = now - dt.timedelta(seconds=rng.randrange(0, 2 * 365 * 86400))
        rows.append(
            {
                "owner_id": rng.choice(owner_ids),
                "amount_minor": amount,
                "currency": currency,
                "category": category,
                "occurred_at": occurred,
                "description": rng.choice(DESCRIPTIONS),
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
    return rows


@click.command("set-password")
@click.argument("username")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the new password from standard input.")
@with_appcontext
@database_errors_in_one_line
def set_password(username: str, from_stdin: bool) -> None:
    """Set USERNAME's password (e.g. a lost admin password).

    Prompts twice, or reads one line from standard input with --stdin. Every token the
    user holds stops working at once, and the change is written to the audit log.
    """
    from .db import get_database
    from .services import users

    password = _read_password(from_stdin, None)
    session = get_database(current_app).new_session()
    try:
        user = users.find_by_username(session, username=username)
        if user is None:
            raise click.ClickException(f"no user named {username.lower()!r}")
        if password.lower() == user.username:
            raise click.UsageError("the password must differ from the username")
        users.reset_password(
            session, user=user, password=password, actor_id=None, reason="set-password on the command line"
        )
        session.commit()
        click.echo(f"password set for {user.username!r}; every token it held is revoked")
    finally:
        session.close()


class SeedProgress:
    """Rows done, rows/s and ETA on one rewritten line, only when stdout is a terminal."""

    def __init__(self, total: int, *, enabled: bool | None = None) -> None:
        self.total = total
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.started = time.perf_counter()

    def line(self, done: int, now: float | None = None) -> str:
        elapsed = max((time.perf_counter() if now is None else now) - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate else 0.0
        percent = 100 * done // self.total
        return f"{done:,}/{self.total:,} rows ({percent}%)  {rate:,.0f} rows/s  ETA {eta:.0f}s"

    def update(self, done: int) -> None:
        if self.enabled:
            click.echo(f"\r\x1b[K{self.line(done)}", nl=False)

    def finish(self) -> None:
        if self.enabled:
            click.echo()


@click.command("seed")
@click.option("--count", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--owner", "owners", multiple=True, help="Username to own records (repeatable); default: every user."
)
@click.option("--random-seed", default=None, type=int, help="Make the data reproducible.")
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(100, 100_000))
@with_appcontext
@database_errors_in_one_line
def seed(count: int, owners: tuple[str, ...], random_seed: int | None, batch_size: int) -> None:
    """Insert COUNT realistic fake records, fast (bulk inserts, one audit entry)."""
    from sqlalchemy import select

    from .db import get_database, mark_owners_changed
    from .models import User
    from .services import audit
    from .services import records as record_service

    rng = random.Random(random_seed)  # noqa: S311 (fake data, not secrets)
    session = get_database(current_app).new_session()
    try:
        query = select(User.id)
        if owners:
            query = query.where(User.username.in_([o.lower() for o in owners]))
        owner_ids = list(session.scalars(query))
        if not owner_ids or (owners and len(owner_ids) != len(set(owners))):
            raise click.ClickException("no such owner(s); create users first (create-admin / create-user)")
        started = time.perf_counter()
        progress = SeedProgress(count)
        done = 0
        while done < count:
            size = min(batch_size, count - done)
            record_service.bulk_insert(session, fake_records(owner_ids, size, rng))
            done += size
            progress.update(done)
        progress.finish()
        audit.record(
            session,
            actor_id=None,
            action="record.seed",
            target_type="record",
            target_id="*",
            after={"count": count, "owner_ids": owner_ids},
        )
        mark_owners_changed(session, owner_ids)
        session.commit()
        elapsed = time.perf_counter() - started
        click.echo(f"seeded {count} records for {len(owner_ids)} owner(s) in {elapsed:.1f}s")
    finally:
        session.close()


@click.command("grant-app-role")
@click.option(
    "--role",
    default=lambda: os.environ.get("DATABASE_APP_ROLE", ""),
    show_default="$DATABASE_APP_ROLE",
    help="The role the API logs in as (created if missing).",
)
@click.option(
    "--password-env",
    default="DATABASE_APP_PASSWORD",
    show_default=True,
    metavar="NAME",
    help="Environment variable with the role's password (set on every run); unset: left as it is.",
)
@with_appcontext
def db_grant_app_role(role: str, password_env: str) -> None:
    """Give the API's role row access only (no DDL, no TRUNCATE, append-only audit log), as the owner."""
    from .dbroles import AppRoleError, grant_app_role
    from .migrate import owner_database_url

    if not role:
        raise click.UsageError("name the role: --role NAME or DATABASE_APP_ROLE")
    from .db import make_engine

    owner_url = owner_database_url(_settings())
    engine = make_engine(_settings().replace(database_url=owner_url, db_pool_size=1))
    try:
        with engine.begin() as conn:
            report = grant_app_role(conn, role=role, password=os.environ.get(password_env) or None)
    except AppRoleError as error:
        raise click.ClickException(str(error)) from None
    finally:
        engine.dispose()
    click.echo(
        f"{'created' if report.created else 'updated'} role {report.role}"
        f"{' (password set)' if report.password_set else ''}: "
        + "; ".join(f"{table}: {', '.join(privileges)}" for table, privileges in report.tables.items())
    )


@click.command("purge")
@with_appcontext
@database_errors_in_one_line
def purge() -> None:
    """Delete expired idempotency keys and expired token families."""
    from sqlalchemy import delete

    from .db import get_database, rowcount
    from .http.idempotency import purge_expired
    from .models import TokenFamily

    session = get_database(current_app).new_session()
    try:
        keys = purge_expired(session)
        families = rowcount(session.execute(delete(TokenFamily).where(TokenFamily.expires_at <= utcnow())))
        session.commit()
        click.echo(f"purged {keys} idempotency keys and {families} token families")
    finally:
        session.close()


def help_app(settings: Settings) -> Flask:
    """A bare app for `flask --help`: the same commands, none of the extensions, no database
    (building the real app costs a second of imports and touches the database)."""
    from flask_smorest.spec import openapi_cli

    app = Flask("statsapi")
    app.extensions["statsapi.settings"] = settings
    init_app(app)
    app.cli.add_command(openapi_cli)
    return app


def init_app(app: Flask) -> None:
    from .migrate import init_cli as init_db_cli

    for command in (create_admin, create_user, set_password, seed, purge):
        app.cli.add_command(command)
    init_db_cli(app, db_grant_app_role)  # the `db` group: Flask-Migrate's Alembic commands, and ours


def main() -> None:
    """``statsapi`` console script: the same commands without ``flask --app``."""
    from flask.cli import FlaskGroup

    from .factory import create_app

    # A FlaskGroup, not app.cli: commands that need the app context find the app through it.
    FlaskGroup(create_app=create_app, help="statsapi commands (as `flask --app statsapi`).").main(
        prog_name="statsapi"
    )
