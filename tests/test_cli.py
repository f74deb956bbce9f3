"""The command line: create-admin, create-user, seed, db, purge, openapi write (SPEC §2, §7)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from statsapi.clock import utcnow
from statsapi.db import get_database
from statsapi.migrate import head_revision
from statsapi.models import AuditEvent, IdempotencyKey, Record, TokenFamily, User

from .factories import Actor, Factory

ADMIN_PASSWORD = "admin password from a pipe"
COMMITTED_SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def invoke(app: Flask, *args: str, input: str | None = None) -> Any:
    """Run a CLI command in ``app``; ``result.output`` holds stdout and stderr."""
    return app.test_cli_runner().invoke(args=list(args), input=input)


def users(app: Flask) -> dict[str, User]:
    session = get_database(app).new_session()
    try:
        return {u.username: u for u in session.scalars(select(User))}
    finally:
        session.close()


def count(app: Flask, model: type) -> int:
    session = get_database(app).new_session()
    try:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        session.close()


def login_role(client: FlaskClient, username: str, password: str) -> str:
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    token = response.get_json()["access_token"]
    return client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).get_json()["role"]


# -- create-admin / create-user ------------------------------------------------------------
def test_create_admin_reads_the_password_from_stdin(clean: Flask, client: FlaskClient) -> None:
    result = invoke(
        clean, "create-admin", "--username", "Boss", "--password-stdin", input=f"{ADMIN_PASSWORD}\n"
    )

    assert result.exit_code == 0, result.output
    assert "created admin 'boss'" in result.output
    assert ADMIN_PASSWORD not in result.output
    assert users(clean)["boss"].role == "admin"
    assert login_role(client, "boss", ADMIN_PASSWORD) == "admin"
    session = get_database(clean).new_session()
    try:
        event = session.scalars(select(AuditEvent)).one()
        assert (event.action, event.actor_id, event.target) == (
            "user.create",
            None,
            f"user:{users(clean)['boss'].id}",
        )
    finally:
        session.close()


def test_create_admin_reads_the_password_from_the_environment(
    clean: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_ADMIN_PASSWORD", ADMIN_PASSWORD)

    result = invoke(clean, "create-admin", "--username", "ops", "--password-env", "MY_ADMIN_PASSWORD")

    assert result.exit_code == 0, result.output
    assert login_role(client, "ops", ADMIN_PASSWORD) == "admin"


def test_create_admin_bootstrap_from_environment(
    clean: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTSTRAP_ADMIN_USERNAME", "compose-admin")
    monkeypatch.setenv("BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)

    first = invoke(clean, "create-admin", "--if-missing")
    again = invoke(clean, "create-admin", "--if-missing")

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    assert "already exists; nothing to do" in again.output
    assert list(users(clean)) == ["compose-admin"]
    assert login_role(client, "compose-admin", ADMIN_PASSWORD) == "admin"


def test_create_admin_if_missing_leaves_the_existing_user_alone(clean: Flask, factory: Factory) -> None:
    existing = factory.user(username="admin", role="user")

    result = invoke(clean, "create-admin", "--if-missing", "--password-stdin", input=f"{ADMIN_PASSWORD}\n")

    assert result.exit_code == 0, result.output
    after = users(clean)["admin"]
    assert (after.role, after.password_hash) == ("user", existing.password_hash)


def test_create_admin_refuses_a_duplicate_without_if_missing(clean: Flask, factory: Factory) -> None:
    factory.user(username="admin", role="admin")

    result = invoke(
        clean, "create-admin", "--username", "ADMIN", "--password-stdin", input=f"{ADMIN_PASSWORD}\n"
    )

    assert result.exit_code == 1
    assert "is taken" in result.output
    assert len(users(clean)) == 1


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--username", "boss", "--password-stdin"], "short\n", "passwords are 12-128 characters"),
        (["--username", "boss", "--password-stdin"], " " * 20 + "\n", "passwords are 12-128 characters"),
        (["--username", "b!", "--password-stdin"], f"{ADMIN_PASSWORD}\n", "usernames are 3-64"),
        (["--username", "boss", "--password-env", "STATSAPI_TEST_UNSET_VARIABLE"], None, "is empty"),
    ],
    ids=["short-password", "blank-password", "bad-username", "empty-env"],
)
def test_create_admin_rejects_bad_input(
    clean: Flask, args: list[str], stdin: str | None, message: str
) -> None:
    result = invoke(clean, "create-admin", *args, input=stdin)

    assert result.exit_code == 2
    assert message in result.output
    assert users(clean) == {}


def test_create_user_with_a_role(clean: Flask, client: FlaskClient) -> None:
    result = invoke(
        clean, "create-user", "Reporter", "--role", "analyst", "--password-stdin", input=f"{ADMIN_PASSWORD}\n"
    )

    assert result.exit_code == 0, result.output
    assert "created analyst 'reporter'" in result.output
    assert login_role(client, "reporter", ADMIN_PASSWORD) == "analyst"
    bad_role = invoke(
        clean, "create-user", "eve", "--role", "root", "--password-stdin", input=f"{ADMIN_PASSWORD}\n"
    )
    assert bad_role.exit_code == 2
    assert "eve" not in users(clean)


# -- seed -------------------------------------------------------------------------------
def test_seed_inserts_exactly_count_rows_and_invalidates_stats(
    clean: Flask, factory: Factory, as_user: Actor, as_other_user: Actor
) -> None:
    factory.record(as_user, amount="-1.00")
    before = as_user.get("/api/stats")
    assert before.get_json()["record_count"] == 1
    assert as_user.get("/api/stats").headers["X-Cache"] == "HIT"

    result = invoke(clean, "seed", "--count", "2000", "--owner", "ALICE", "--random-seed", "7")

    assert result.exit_code == 0, result.output
    assert "seeded 2000 records for 1 owner(s)" in result.output
    assert count(clean, Record) == 2001
    session = get_database(clean).new_session()
    try:
        owners = dict(session.execute(select(Record.owner_id, func.count()).group_by(Record.owner_id)).all())
        currencies = set(session.scalars(select(Record.currency).distinct()))
    finally:
        session.close()
    assert owners == {as_user.user_id: 2001}
    assert len(currencies) > 1
    after = as_user.get("/api/stats")
    assert after.headers["X-Cache"] == "MISS"
    assert after.get_json()["record_count"] == 2001
    # The other user's scope is untouched.
    assert as_other_user.get("/api/stats").get_json()["record_count"] == 0
    # Seeded rows are valid for the API: they list and read back.
    page = as_user.get("/api/records", query_string={"limit": 500}).get_json()
    assert len(page["items"]) == 500
    assert page["next_cursor"]


def test_seed_spreads_over_every_user_by_default(clean: Flask, factory: Factory) -> None:
    for name in ("u1x", "u2x", "u3x"):
        factory.user(username=name)

    result = invoke(clean, "seed", "--count", "300", "--random-seed", "1")

    assert result.exit_code == 0, result.output
    session = get_database(clean).new_session()
    try:
        per_owner = session.execute(select(Record.owner_id, func.count()).group_by(Record.owner_id)).all()
    finally:
        session.close()
    assert len(per_owner) == 3
    assert sum(n for _, n in per_owner) == 300


@pytest.mark.parametrize("args", [["--owner", "ghost"], ["--count", "0"]])
def test_seed_refuses_bad_input(clean: Flask, factory: Factory, args: list[str]) -> None:
    factory.user(username="alice")

    result = invoke(clean, "seed", *args)

    assert result.exit_code != 0
    assert count(clean, Record) == 0


# -- db ----------------------------------------------------------------------------------
def db(app: Flask, *args: str) -> str:
    result = invoke(app, "db", *args)
    assert result.exit_code == 0, result.output
    return str(result.output).strip()


def test_db_current_and_upgrade(clean: Flask) -> None:
    head = head_revision()

    assert db(clean, "current") == f"{head} (head)"
    db(clean, "upgrade")
    assert db(clean, "current") == f"{head} (head)"


def test_db_upgrade_migrates_an_empty_database(make_app: Any, tmp_path: Path) -> None:
    fresh = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")

    assert db(fresh, "current") == ""
    db(fresh, "upgrade")
    assert db(fresh, "current") == f"{head_revision()} (head)"
    assert fresh.test_client().get("/ready").get_json()["checks"]["migrations"]["status"] == "ok"


# -- purge -------------------------------------------------------------------------------
def test_purge_deletes_only_expired_keys_and_families(clean: Flask, factory: Factory) -> None:
    user = factory.user(username="alice")
    now = utcnow()
    session = get_database(clean).new_session()
    try:
        for name, expires in (("old", now - dt.timedelta(hours=1)), ("live", now + dt.timedelta(hours=1))):
            session.add(
                IdempotencyKey(
                    user_id=user.id, key=name, endpoint="records.create", request_hash="0" * 64, state="done",
                    created_at=now - dt.timedelta(days=1), locked_until=now, expires_at=expires,
                )
            )  # fmt: skip
            session.add(
                TokenFamily(
                    id=str(uuid.uuid4()), user_id=user.id, current_refresh_jti=str(uuid.uuid4()),
                    created_at=now - dt.timedelta(days=15), expires_at=expires,
                )
            )  # fmt: skip
        session.commit()
    finally:
        session.close()

    result = invoke(clean, "purge")

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "purged 1 idempotency keys and 1 token families"
    session = get_database(clean).new_session()
    try:
        assert list(session.scalars(select(IdempotencyKey.key))) == ["live"]
        assert all(f.expires_at > now for f in session.scalars(select(TokenFamily)))
        assert count(clean, TokenFamily) == 1
    finally:
        session.close()


# -- openapi -----------------------------------------------------------------------------
def test_openapi_write_produces_the_committed_file(clean: Flask, tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"

    result = invoke(clean, "openapi", "write", str(target))

    assert result.exit_code == 0, result.output
    assert target.read_text() == COMMITTED_SPEC.read_text(), (
        "run `make openapi` and commit openapi/openapi.json"
    )


def test_the_cli_offers_exactly_the_model_roles() -> None:
    from statsapi.cli import ROLE_NAMES
    from statsapi.models import ROLES

    assert tuple(role.value for role in ROLES) == ROLE_NAMES


# -- set-password (admin recovery) ------------------------------------------------------------
NEW_PASSWORD = "a brand new admin password"


def test_set_password_from_stdin_revokes_tokens_and_is_audited(
    clean: Flask, client: FlaskClient, as_admin: Actor
) -> None:
    old_token = as_admin.access_token
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {old_token}"}).status_code == 200

    result = invoke(clean, "set-password", "ROOT", "--stdin", input=f"{NEW_PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "password set for 'root'" in result.output
    assert NEW_PASSWORD not in result.output
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {old_token}"}).status_code == 401
    old_login = client.post("/api/auth/login", json={"username": "root", "password": as_admin.password})
    assert old_login.status_code == 401
    assert login_role(client, "root", NEW_PASSWORD) == "admin"
    session = get_database(clean).new_session()
    try:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "user.password_reset")).one()
        assert (event.actor_id, event.target) == (None, f"user:{as_admin.user_id}")
        assert NEW_PASSWORD not in str(event.after)
    finally:
        session.close()


def test_set_password_prompts_twice(clean: Flask, client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")

    mismatch = invoke(clean, "set-password", "alice", input=f"{NEW_PASSWORD}\nsomething else entirely\n")
    matched = invoke(clean, "set-password", "alice", input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")

    assert mismatch.exit_code != 0
    assert matched.exit_code == 0, matched.output
    assert login_role(client, "alice", NEW_PASSWORD) == "user"


@pytest.mark.parametrize(
    ("username", "stdin", "code", "message"),
    [
        ("alice", "short\n", 2, "passwords are 12-128 characters"),
        ("alice", " " * 16 + "\n", 2, "passwords are 12-128 characters"),
        ("alice", "x" * 129 + "\n", 2, "passwords are 12-128 characters"),
        ("alicealicealice", "alicealicealice\n", 2, "must differ from the username"),
        ("ghost", f"{NEW_PASSWORD}\n", 1, "no user named 'ghost'"),
    ],
    ids=["short", "blank", "long", "same-as-username", "unknown-user"],
)
def test_set_password_rejects_bad_input(
    clean: Flask, factory: Factory, username: str, stdin: str, code: int, message: str
) -> None:
    existing = factory.user(username="alicealicealice" if username == "alicealicealice" else "alice")
    events = count(clean, AuditEvent)

    result = invoke(clean, "set-password", username, "--stdin", input=stdin)

    assert result.exit_code == code, result.output
    assert message in result.output
    assert users(clean)[existing.username].password_hash == existing.password_hash
    assert count(clean, AuditEvent) == events


# -- seed progress ---------------------------------------------------------------------------
def test_seed_progress_line() -> None:
    from statsapi.cli import SeedProgress

    progress = SeedProgress(10_000, enabled=True)

    assert progress.line(2_500, now=progress.started + 2) == "2,500/10,000 rows (25%)  1,250 rows/s  ETA 6s"
    assert progress.line(10_000, now=progress.started + 4).endswith("ETA 0s")


def test_seed_is_quiet_when_stdout_is_not_a_terminal(clean: Flask, factory: Factory) -> None:
    factory.user(username="alice")

    result = invoke(clean, "seed", "--count", "300", "--batch-size", "100")

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("seeded 300 records")
    assert "rows/s" not in result.output


@pytest.mark.slow
def test_seed_shows_progress_on_a_terminal(
    clean: Flask, factory: Factory, pg_url: str, tmp_path: Path
) -> None:
    import os
    import pty
    import subprocess

    from .conftest import TEST_SECRET
    from .proctools import BIN, clean_env

    factory.user(username="alice")
    leader, follower = pty.openpty()
    env = clean_env({"STATSAPI_ENV": "testing", "DATABASE_URL": pg_url, "JWT_SECRET_KEY": TEST_SECRET})
    process = subprocess.Popen(
        [str(BIN / "flask"), "--app", "statsapi", "seed", "--count", "500", "--batch-size", "100"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closes when the process exits
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        process.wait(timeout=60)
        os.close(leader)
    shown = b"".join(chunks).decode()

    assert process.returncode == 0, shown
    for done in ("100/500 rows (20%)", "300/500 rows (60%)", "500/500 rows (100%)"):
        assert done in shown
    assert "rows/s" in shown and "ETA" in shown
    assert "seeded 500 records" in shown
    assert count(clean, Record) == 500
