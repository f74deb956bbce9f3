"""Command line: ``flask --app statsapi <command>``.

create-admin, create-user, seed, purge, db (Flask-Migrate: upgrade, downgrade, current,
history, revision --autogenerate, ...) — and ``openapi write``
(from flask-smorest) to export the spec.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sys
import time
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import delete, select

from .clock import utcnow
from .config import Settings
from .db import get_database, mark_owners_changed, rowcount
from .models import ROLES, TokenFamily, User
from .schemas.users import PASSWORD_MAX, PASSWORD_MIN, USERNAME


def _settings() -> Settings:
    return current_app.extensions["statsapi.settings"]


def _read_password(password_stdin: bool, env_name: str | None) -> str:
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
    from .services import users
    from .services.errors import Conflict

    if not USERNAME.fullmatch(username):
        raise click.UsageError("usernames are 3-64 letters, digits, '_', '.', '-'")
    session = get_database().new_session()
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
def create_admin(username: str, password_stdin: bool, password_env: str | None, if_missing: bool) -> None:
    """Create an admin user."""
    if not password_env and not password_stdin and os.environ.get("BOOTSTRAP_ADMIN_PASSWORD"):
        password_env = "BOOTSTRAP_ADMIN_PASSWORD"  # noqa: S105 (a variable name, not a secret)
    _create_user(username, _read_password(password_stdin, password_env), "admin", if_missing)


@click.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in ROLES]), default="user", show_default=True)
@click.option("--password-stdin", is_flag=True)
@click.option("--password-env", metavar="NAME")
@with_appcontext
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


@click.command("seed")
@click.option("--count", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--owner", "owners", multiple=True, help="Username to own records (repeatable); default: every user."
)
@click.option("--random-seed", default=None, type=int, help="Make the data reproducible.")
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(100, 100_000))
@with_appcontext
def seed(count: int, owners: tuple[str, ...], random_seed: int | None, batch_size: int) -> None:
    """Insert COUNT realistic fake records, fast (bulk inserts, one audit entry)."""
    from .services import audit
    from .services import records as record_service

    rng = random.Random(random_seed)  # noqa: S311 (fake data, not secrets)
    session = get_database().new_session()
    try:
        query = select(User.id)
        if owners:
            query = query.where(User.username.in_([o.lower() for o in owners]))
        owner_ids = list(session.scalars(query))
        if not owner_ids or (owners and len(owner_ids) != len(set(owners))):
            raise click.ClickException("no such owner(s); create users first (create-admin / create-user)")
        started = time.perf_counter()
        done = 0
        while done < count:
            size = min(batch_size, count - done)
            record_service.bulk_insert(session, fake_records(owner_ids, size, rng))
            done += size
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


@click.command("purge")
@with_appcontext
def purge() -> None:
    """Delete expired idempotency keys and expired token families."""
    from .idempotency import purge_expired

    session = get_database().new_session()
    try:
        keys = purge_expired(session)
        families = rowcount(session.execute(delete(TokenFamily).where(TokenFamily.expires_at <= utcnow())))
        session.commit()
        click.echo(f"purged {keys} idempotency keys and {families} token families")
    finally:
        session.close()


def init_app(app: Flask) -> None:
    from .migrate import init_cli as init_db_cli

    for command in (create_admin, create_user, seed, purge):
        app.cli.add_command(command)
    init_db_cli(app)  # the `db` group: Flask-Migrate's Alembic commands


def main() -> None:
    """``statsapi`` console script: the same commands without ``flask --app``."""
    from flask.cli import FlaskGroup

    from . import create_app

    # A FlaskGroup, not app.cli: commands that need the app context find the app through it.
    FlaskGroup(create_app=create_app, help="statsapi commands (as `flask --app statsapi`).").main(
        prog_name="statsapi"
    )
