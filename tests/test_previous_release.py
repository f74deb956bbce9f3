"""The previous release's code on the schema after this release's migrations (docs/migrations.md).

During a deploy the new release migrates first, while the previous one still serves: the
previous code must survive every new migration. Here it runs for real, from a git worktree
of the previous release, under gunicorn against a database this checkout migrated to its
head, through the smoke flows over HTTP; then this checkout's code runs the same flows on
the same database and Redis key space, and reads what the previous release wrote.

"Previous release": the newest tag ``v*`` below HEAD if there is one, else the parent of the
newest commit that changed ``migrations/versions/`` (so at least one new migration lies in
between). A shallow clone has no such history: the test fails and says how to get it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic.config import Config
from alembic.script import ScriptDirectory

from statsapi.migrate import head_revision, upgrade

from .conftest import REDIS_URL, app_role_url, as_app_role, scratch_database
from .proctools import BIN, ROOT, flask, server
from .redis_tools import delete_keys, free_port

pytestmark = pytest.mark.slow

GIT = shutil.which("git")
ADMIN = "release-admin"
SHALLOW = (
    "this clone is shallow: the previous release's code is not in it. Fetch the whole history "
    "(`git fetch --unshallow --tags`; in GitHub Actions, actions/checkout with `fetch-depth: 0`)"
)


def git(*args: str, root: Path = ROOT) -> str:
    if GIT is None:
        pytest.fail("git is not installed (apt package git; scripts/bootstrap.sh)", pytrace=False)
    done = subprocess.run([GIT, *args], cwd=root, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed: {done.stderr.strip()}", pytrace=False)
    return done.stdout.strip()


def previous_release(root: Path = ROOT) -> tuple[str, str]:
    """(commit, why it is the previous release) of the checkout at ``root``."""
    if git("rev-parse", "--is-shallow-repository", root=root) == "true":
        pytest.fail(SHALLOW, pytrace=False)
    tags = git(
        "tag", "--list", "v*", "--merged", "HEAD", "--no-contains", "HEAD", "--sort=-creatordate", root=root
    )
    if tags:
        tag = tags.splitlines()[0]
        return git("rev-parse", f"{tag}^{{commit}}", root=root), f"tag {tag}"
    newest = git("log", "-1", "--format=%H", "--", "migrations/versions", root=root)
    if not newest:
        pytest.fail("no v* tag and no commit that changed migrations/versions/: " + SHALLOW, pytrace=False)
    parent = subprocess.run(
        [str(GIT), "rev-parse", "--verify", "--quiet", f"{newest}^"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not parent:
        pytest.fail(
            f"{newest[:12]} (the newest migration commit) has no parent here: {SHALLOW}", pytrace=False
        )
    return parent, f"parent of {newest[:12]}, the newest commit that changed migrations/versions/"


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached worktree of ``commit`` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="statsapi-previous-") as parent:
        path = Path(parent) / "release"
        git("worktree", "add", "--detach", str(path), commit)
        try:
            yield path
        finally:
            git("worktree", "remove", "--force", str(path))


def migration_head(tree: Path) -> str | None:
    config = Config()
    config.set_main_option("script_location", str(tree / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


@dataclass
class Deployment:
    """One database (migrated by this checkout) and one Redis key space, as both releases see them."""

    owner_url: str
    env: dict[str, str]
    admin_password: str
    work: Path

    @contextmanager
    def serve(self, tree: Path, name: str) -> Iterator[str]:
        """gunicorn with ``tree``'s own config and package (its cwd, first on PYTHONPATH)."""
        port = free_port()
        metrics = self.work / f"metrics-{name}"
        metrics.mkdir()
        env = self.env | {
            "PYTHONPATH": str(tree),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }
        args = [str(BIN / "gunicorn"), "-c", str(tree / "gunicorn.conf.py"), "statsapi.wsgi:app"]
        url = f"http://127.0.0.1:{port}"
        with server(args, tree, f"{url}/health", env):
            yield url


@pytest.fixture
def deployment(worker_id: str, tmp_path: Path) -> Iterator[Deployment]:
    """This release's pre-deploy steps, as the schema owner: migrations, grants, first admin."""
    password = secrets.token_urlsafe(18)
    prefix = f"statsapi-previous-{uuid.uuid4().hex[:10]}:"
    with scratch_database("previous_release", worker_id) as owner_url:
        upgrade(owner_url)  # this checkout's migrations, to its head
        as_app_role(owner_url)
        admin_env = {"BOOTSTRAP_ADMIN_USERNAME": ADMIN, "BOOTSTRAP_ADMIN_PASSWORD": password}
        steps_env = {"DATABASE_URL": owner_url, "STATSAPI_ENV": "testing"} | admin_env
        done = flask("create-admin", "--if-missing", cwd=ROOT, env=steps_env)
        assert done.returncode == 0, done.stderr
        env = {
            "STATSAPI_ENV": "production",
            "DATABASE_URL": app_role_url(owner_url),
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": prefix,
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),  # one key for both releases, as in a deploy
            "RATELIMIT_USER": "10000/minute",
            "RATELIMIT_LOGIN": "10000/minute",
            "RATELIMIT_ANONYMOUS": "10000/minute",
            "RATELIMIT_ELEVATED": "10000/minute",
            "STATSAPI_INSTANCE_PATH": str(tmp_path / "instance"),
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "2",
            "LOG_LEVEL": "WARNING",
        }
        try:
            yield Deployment(owner_url, env, password, tmp_path)
        finally:
            delete_keys(REDIS_URL, prefix)


# -- the smoke flows, over HTTP -------------------------------------------------------------------
def _login(http: requests.Session, base: str, username: str, password: str) -> dict[str, str]:
    response = http.post(
        f"{base}/api/auth/login", json={"username": username, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def smoke_flows(base: str, admin_password: str, name: str) -> dict[str, Any]:
    """Log in, create/read/update a record, stats, an admin role grant, log out.
    Returns what a later release should read back."""
    http = requests.Session()
    http.trust_env = False
    admin = _login(http, base, ADMIN, admin_password)
    password = secrets.token_urlsafe(12)
    created = http.post(
        f"{base}/api/admin/users", json={"username": name, "password": password}, headers=admin, timeout=10
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]

    user = _login(http, base, name, password)
    body = {
        "amount": "-12.50",
        "currency": "EUR",
        "category": "groceries",
        "occurred_at": "2026-03-01T09:30:00Z",
    }
    record = http.post(f"{base}/api/records", json=body, headers=user | {"Idempotency-Key": name}, timeout=10)
    assert record.status_code == 201, record.text
    url = f"{base}/api/records/{record.json()['id']}"
    read = http.get(url, headers=user, timeout=10)
    assert (read.status_code, read.json()["amount"]) == (200, "-12.50"), read.text
    updated = http.patch(
        url, json={"amount": "-20.00"}, headers=user | {"If-Match": read.headers["ETag"]}, timeout=10
    )
    assert (updated.status_code, updated.json()["amount"]) == (200, "-20.00"), updated.text
    stats = http.get(f"{base}/api/stats", headers=user, timeout=10)
    assert stats.status_code == 200, stats.text
    assert (stats.json()["record_count"], stats.json()["totals"]["EUR"]["sum"]) == (1, "-20.00")

    grant = http.put(
        f"{base}/api/admin/users/{user_id}/role",
        json={"role": "analyst", "reason": "release check"},
        headers=admin,
        timeout=10,
    )
    assert grant.status_code == 200, grant.text
    # A role change ends the user's sessions on the next request; the new login carries it.
    assert http.get(f"{base}/api/auth/me", headers=user, timeout=10).status_code == 401
    user = _login(http, base, name, password)
    assert http.get(f"{base}/api/auth/me", headers=user, timeout=10).json()["role"] == "analyst"
    assert http.post(f"{base}/api/records", json=body, headers=user, timeout=10).status_code == 403

    assert http.post(f"{base}/api/auth/logout", headers=user, timeout=10).status_code == 204
    assert http.get(f"{base}/api/auth/me", headers=user, timeout=10).status_code == 401
    return {"record": record.json()["id"], "amount": "-20.00", "user": user_id}


def _ready(base: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{base}/ready", timeout=10)
    return response.status_code, response.json()


def _read_back(base: str, admin_password: str, wrote: dict[str, Any]) -> None:
    http = requests.Session()
    http.trust_env = False
    admin = _login(http, base, ADMIN, admin_password)
    record = http.get(f"{base}/api/records/{wrote['record']}", headers=admin, timeout=10)
    assert (record.status_code, record.json()["amount"]) == (200, wrote["amount"]), record.text
    user = http.get(f"{base}/api/admin/users/{wrote['user']}", headers=admin, timeout=10)
    assert user.json()["role"] == "analyst", user.text


def _expected_readiness(previous: Path, old_head: str | None, head: str | None) -> tuple[int, str]:
    """What the previous release's /ready must say on this checkout's schema."""
    if old_head == head:
        return 200, "ok"
    if (previous / "statsapi" / "schema_compat.py").exists():
        return 200, "ahead"  # it reads the recorded floor: the new schema is within it
    return 503, "behind"  # a release from before the floor wants its own head only


def test_the_previous_release_serves_on_the_new_schema(deployment: Deployment) -> None:
    """Both releases at once on one schema, as during a deploy: each serves the smoke flows
    and reads what the other wrote (the previous one reading the new one's rows is the rollback)."""
    commit, why = previous_release()
    head = head_revision()
    with worktree(commit) as previous:
        old_head = migration_head(previous)
        if why.startswith("parent"):
            assert old_head != head, f"{why}: no new migration between it and HEAD"
        with (
            deployment.serve(previous, "previous") as old_base,
            deployment.serve(ROOT, "current") as new_base,
        ):
            status, ready = _ready(old_base)
            # The package that answers is the previous release's: it names its own head.
            assert ready["checks"]["migrations"]["head"] == old_head, (why, ready)
            expected = _expected_readiness(previous, old_head, head)
            assert (status, ready["checks"]["migrations"]["status"]) == expected, (why, ready)
            status, ready = _ready(new_base)
            assert (status, ready["checks"]["migrations"]) == (
                200,
                {"status": "ok", "revision": head, "head": head},
            )

            old = smoke_flows(old_base, deployment.admin_password, "previous-release")
            new = smoke_flows(new_base, deployment.admin_password, "current-release")
            _read_back(new_base, deployment.admin_password, old)
            _read_back(old_base, deployment.admin_password, new)


def test_a_shallow_clone_fails_with_the_way_out(tmp_path: Path) -> None:
    """Control: without the history there is no previous release to run, and no silent skip."""
    clone = tmp_path / "shallow"
    git("clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone))

    with pytest.raises(pytest.fail.Exception, match="fetch-depth: 0"):
        previous_release(clone)
    commit, why = previous_release(ROOT)
    assert git("merge-base", "--is-ancestor", commit, "HEAD") == ""  # an ancestor, or git failed the test
    assert why.startswith(("tag v", "parent of ")), why
