"""Redis is an accelerator, never an authority (issue 8, items 1, 2 and 4).

Whoever can write to Redis is the attacker here: every test writes straight into the
app's key space with a plain client, then asserts the request is judged exactly as
PostgreSQL judges it, the answer is the database's, nothing answers 5xx, and the bad
entry has been replaced by a good one.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import create_engine, func, select

from statsapi.auth.token_state import TTL, StateCodec, TokenStateCache
from statsapi.db import database_identity, get_database
from statsapi.models import User
from statsapi.state import redis as state_redis
from statsapi.state.stats_cache import CacheKey, EntryCodec

from .conftest import PG_URL_TEMPLATE, REDIS_URL, _admin_connection, as_app_role
from .factories import Actor, Factory
from .redis_tools import delete_keys

pytestmark = pytest.mark.usefixtures("clean")
BAD_MAC = "0" * 32


@pytest.fixture
def redis_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(REDIS_URL="default")


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def tokens_of(app: Flask) -> TokenStateCache:
    cache: TokenStateCache = app.extensions["statsapi.token_cache"]
    return cache


def auth_keys(app: Flask, actor: Actor) -> tuple[str, str]:
    cache = tokens_of(app)
    return cache.user_key(actor.user_id), cache.family_key(claims_of(actor.access_token)["fam"])


def decoded(app: Flask, raw: redis.Redis, actor: Actor) -> Any:
    """What the app would now read from Redis for this actor's token (None: a miss)."""
    user_key, family_key = auth_keys(app, actor)
    fam = claims_of(actor.access_token)["fam"]
    return tokens_of(app).codec.decode(actor.user_id, fam, raw.get(user_key), raw.get(family_key))


def admins(app: Flask) -> int:
    with get_database(app).new_session() as session:
        return int(session.scalar(select(func.count()).select_from(User).where(User.role == "admin")) or 0)


def foreign_codec(app: Flask, identity: str | None) -> StateCodec:
    """The codec another deployment with the same signing key would use."""
    codec = StateCodec(app.extensions["statsapi.keys"].derive("token-state"))
    if identity is not None:
        codec.bind(identity)
    return codec


def assert_judged_as_plain_user(app: Flask, raw: redis.Redis, alice: Actor) -> None:
    before = admins(app)
    assert alice.get("/api/admin/users").status_code == 403
    created = alice.post(
        "/api/admin/users",
        json={"username": f"evil{uuid.uuid4().hex[:6]}", "password": "pw pw pw pw pw", "role": "admin"},
    )
    assert created.status_code == 403
    assert admins(app) == before
    me = alice.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json["role"] == "user"
    state = decoded(app, raw, alice)  # repaired: the entry now says what PostgreSQL says
    assert state is not None
    assert (state.role, state.is_active) == ("user", True)


# -- item 1: a Redis entry never grants anything ---------------------------------------------
FORGED_USER_VALUES: dict[str, Callable[[Flask, Actor, Actor, int], str | bytes]] = {
    "admin, bad mac (old layout)": lambda app, alice, root, gen: f"admin|1|{gen}|{BAD_MAC}",
    "admin, bad mac": lambda app, alice, root, gen: f"admin|1|{gen}|{int(time.time())}|{BAD_MAC}",
    "admin, higher generation": lambda app, alice, root, gen: (
        f"admin|1|{gen + 5}|{int(time.time())}|{BAD_MAC}"
    ),
    "admin, lower generation": lambda app, alice, root, gen: (
        f"admin|1|{gen - 1}|{int(time.time())}|{BAD_MAC}"
    ),
    "another deployment's value": lambda app, alice, root, gen: foreign_codec(
        app, str(uuid.uuid4())
    ).user_value(alice.user_id, "admin", True, gen),
    "an unbound value under the same signing key": lambda app, alice, root, gen: foreign_codec(
        app, None
    ).user_value(alice.user_id, "admin", True, gen),
}


@pytest.mark.parametrize("forgery", [*FORGED_USER_VALUES, "copied from an admin's key"])
def test_a_forged_role_never_grants_admin(forgery: str, redis_app: Flask, raw: redis.Redis) -> None:
    factory = Factory(redis_app)
    client = redis_app.test_client()
    alice = factory.actor(client, username="alice")
    root = factory.actor(client, role="admin", username="root")
    assert root.get("/api/admin/users").status_code == 200  # root's entry is cached
    assert alice.get("/api/auth/me").status_code == 200
    user_key, _ = auth_keys(redis_app, alice)
    gen = int(claims_of(alice.access_token)["gen"])
    if forgery == "copied from an admin's key":
        value = raw.get(auth_keys(redis_app, root)[0])
        assert value is not None and value.startswith(b"admin|")
    else:
        value = FORGED_USER_VALUES[forgery](redis_app, alice, root, gen)
    raw.set(user_key, value)
    assert_judged_as_plain_user(redis_app, raw, alice)


REVOKE: dict[str, Callable[[Actor, Actor], Any]] = {
    "deactivated": lambda alice, root: root.patch(
        f"/api/admin/users/{alice.user_id}", json={"is_active": False}
    ),
    "revoked by an admin": lambda alice, root: root.post(f"/api/admin/users/{alice.user_id}/revoke-tokens"),
    "logged out": lambda alice, root: alice.post("/api/auth/logout"),
}


def forged_states(app: Flask, alice: Actor, other_family: str, gen: int) -> list[tuple[Any, Any]]:
    """(user value, family value) pairs that would say "honoured" if Redis were believed."""
    fam = claims_of(alice.access_token)["fam"]
    now = int(time.time())
    stranger = foreign_codec(app, str(uuid.uuid4()))
    good_family = tokens_of(app).codec.family_value(other_family, True)  # valid, for another family
    return [
        (f"user|1|{gen}|{now}|{BAD_MAC}", f"live|{now}|{BAD_MAC}"),
        (f"user|1|{gen + 1}|{now}|{BAD_MAC}", f"live|{now}|{BAD_MAC}"),
        (f"user|1|{gen - 1}|{now}|{BAD_MAC}", "live"),
        (f"user|1|{gen}|{BAD_MAC}", f"live|{BAD_MAC}"),
        (stranger.user_value(alice.user_id, "user", True, gen), stranger.family_value(fam, True)),
        (None, good_family),  # a live family's value copied over the revoked one
    ]


@pytest.mark.parametrize("how", list(REVOKE))
def test_forged_state_never_honours_a_revoked_token(how: str, redis_app: Flask, raw: redis.Redis) -> None:
    factory = Factory(redis_app)
    client = redis_app.test_client()
    alice = factory.actor(client, username="alice")
    root = factory.actor(client, role="admin", username="root")
    other_session = factory.tokens(SimpleNamespace(id=alice.user_id))  # type: ignore[arg-type]  # a second login
    assert alice.get("/api/auth/me").status_code == 200
    gen = int(claims_of(alice.access_token)["gen"])
    assert REVOKE[how](alice, root).status_code in (200, 204)
    user_key, family_key = auth_keys(redis_app, alice)
    revoked_user = raw.get(user_key)
    for user_value, family_value in forged_states(
        redis_app, alice, claims_of(other_session.access_token)["fam"], gen
    ):
        raw.set(user_key, user_value if user_value is not None else revoked_user)
        raw.set(family_key, family_value)
        response = alice.get("/api/auth/me")
        assert response.status_code == 401, (user_value, family_value)
        assert alice.post("/api/auth/refresh", token=alice.refresh_token).status_code == 401
        state = decoded(redis_app, raw, alice)
        assert state is None or not state.accepts(claims_of(alice.access_token))


def test_a_replayed_state_is_honoured_no_longer_than_its_ttl(
    redis_app: Flask, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values read before a revocation and written back after it: the signature is ours, but
    the value says when it was read, and an old one is a miss."""
    factory = Factory(redis_app)
    client = redis_app.test_client()
    alice = factory.actor(client, username="alice")
    root = factory.actor(client, role="admin", username="root")
    assert alice.get("/api/auth/me").status_code == 200
    user_key, family_key = auth_keys(redis_app, alice)
    recorded = raw.get(user_key), raw.get(family_key)
    assert REVOKE["revoked by an admin"](alice, root).status_code == 204
    later = time.time() + TTL + 1
    monkeypatch.setattr("statsapi.auth.token_state.time.time", lambda: later)
    raw.set(user_key, recorded[0])
    raw.set(family_key, recorded[1])
    assert alice.get("/api/auth/me").status_code == 401


# -- stats cache: forged numbers are never served ---------------------------------------------
def stats_keys(app: Flask, raw: redis.Redis, owner_id: int) -> tuple[str, list[bytes]]:
    connection = app.extensions["statsapi.redis"]
    version_key = connection.key("stats", "v", f"owner:{owner_id}")
    entries = [
        key
        for key in raw.scan_iter(match=connection.key("stats", "e", f"owner:{owner_id}", "*"))
        if not key.endswith(b":lock")
    ]
    return version_key, entries


def two_owners(app: Flask) -> tuple[Actor, Actor]:
    factory = Factory(app)
    client = app.test_client()
    alice = factory.actor(client, username="alice")
    bob = factory.actor(client, username="bob")
    factory.record(alice, amount="-10.00")
    for _ in range(3):
        factory.record(bob, amount="-999.00")
    return alice, bob


def numbers(response: Any) -> dict[str, Any]:
    """The answer without its computation time (a recomputation has a later one)."""
    body = json.loads(response.get_data())
    body.pop("generated_at")
    return dict(body)


def forge_body(value: bytes) -> bytes:
    head, _, body = value.partition(b"\n")
    return head + b"\n" + body.replace(b"10.00", b"0.01")


@pytest.mark.parametrize("forgery", ["another body", "moved from another scope", "another deployment"])
def test_forged_stats_entries_are_never_served(forgery: str, redis_app: Flask, raw: redis.Redis) -> None:
    alice, bob = two_owners(redis_app)
    truth = alice.get("/api/stats")
    assert truth.headers["X-Cache"] == "MISS"
    assert bob.get("/api/stats").status_code == 200
    _, (entry,) = stats_keys(redis_app, raw, alice.user_id)
    _, (bob_entry,) = stats_keys(redis_app, raw, bob.user_id)
    if forgery == "another body":
        forged = forge_body(raw.get(entry) or b"")
    elif forgery == "moved from another scope":
        forged = raw.get(bob_entry) or b""
    else:
        stranger = EntryCodec(redis_app.extensions["statsapi.keys"].derive("stats-cache"))
        stranger.bind(str(uuid.uuid4()))
        version = entry.decode().rsplit(":", 2)[-2]
        digest = entry.decode().rsplit(":", 1)[-1]
        forged = stranger.seal(
            CacheKey(f"owner:{alice.user_id}", digest),
            version,
            b'{"forged":true}',
        )
    assert forged and forged != raw.get(entry)
    raw.set(entry, forged)
    answer = alice.get("/api/stats")
    assert answer.status_code == 200
    assert answer.headers["X-Cache"] == "MISS"
    assert numbers(answer) == numbers(truth)
    again = alice.get("/api/stats")  # repaired: the database's answer is cached again
    assert again.headers["X-Cache"] == "HIT"
    assert again.get_data() == answer.get_data()


def test_a_version_pointed_at_another_scope_serves_nothing_of_it(redis_app: Flask, raw: redis.Redis) -> None:
    alice, bob = two_owners(redis_app)
    truth = numbers(alice.get("/api/stats"))
    bob.get("/api/stats")
    alice_version, (alice_entry,) = stats_keys(redis_app, raw, alice.user_id)
    bob_version, (bob_entry,) = stats_keys(redis_app, raw, bob.user_id)
    # Alice's scope now points at Bob's version, and Bob's entry sits under it.
    raw.set(alice_version, raw.get(bob_version) or b"")
    moved = alice_entry.decode().rsplit(":", 2)[0] + ":" + bob_entry.decode().rsplit(":", 2)[1] + ":"
    raw.set(moved + alice_entry.decode().rsplit(":", 1)[1], raw.get(bob_entry) or b"")
    answer = alice.get("/api/stats")
    assert answer.status_code == 200
    assert numbers(answer) == truth


# -- item 2: a malformed entry is a miss, not a 500 -------------------------------------------
MALFORMED: dict[str, Callable[[redis.Redis, str], Any]] = {
    "garbage": lambda r, k: r.set(k, "garbage"),
    "empty": lambda r, k: r.set(k, ""),
    "not utf-8": lambda r, k: r.set(k, b"\xff\xfe\x80|\xc3(|\x00"),
    "non-ascii text": lambda r, k: r.set(k, "admin|1|1|é|ñ"),
    "too many fields": lambda r, k: r.set(k, "user|1|1|1|1|1|1|1|" + BAD_MAC),
    "too few fields": lambda r, k: r.set(k, "user|" + BAD_MAC),
    "wrong types": lambda r, k: r.set(k, f"user|yes|one|{'x' * 8}|{BAD_MAC}"),
    "a hash": lambda r, k: (r.delete(k), r.hset(k, "role", "admin")),
    "a list": lambda r, k: (r.delete(k), r.rpush(k, "admin", "1")),
    "a set": lambda r, k: (r.delete(k), r.sadd(k, "admin")),
}


def key_of_kind(app: Flask, raw: redis.Redis, alice: Actor, kind: str) -> str:
    user_key, family_key = auth_keys(app, alice)
    version_key, entries = stats_keys(app, raw, alice.user_id)
    return {"user": user_key, "family": family_key, "version": version_key, "entry": entries[0].decode()}[
        kind
    ]


def repaired(app: Flask, raw: redis.Redis, alice: Actor, kind: str, key: str) -> bool:
    if raw.type(key) != b"string":
        return False
    if kind in ("user", "family"):
        return decoded(app, raw, alice) is not None
    if kind == "version":
        return bool((raw.get(key) or b"").isalnum())
    return True  # the entry: proven by the HIT that follows


@pytest.mark.parametrize("kind", ["user", "family", "version", "entry"])
@pytest.mark.parametrize("how", list(MALFORMED))
def test_a_malformed_entry_is_a_miss_and_is_repaired(
    kind: str, how: str, redis_app: Flask, raw: redis.Redis
) -> None:
    alice, _bob = two_owners(redis_app)
    truth = numbers(alice.get("/api/stats"))
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"
    key = key_of_kind(redis_app, raw, alice, kind)
    MALFORMED[how](raw, key)
    answer = alice.get("/api/stats")
    assert answer.status_code == 200, answer.get_data()
    assert numbers(answer) == truth
    if kind in ("user", "family"):
        assert repaired(redis_app, raw, alice, kind, key)  # the fill after the miss rewrote it
    again = alice.get("/api/stats")
    assert again.status_code == 200
    assert numbers(again) == truth
    assert again.headers["X-Cache"] == "HIT"  # the stats entry is good again
    assert repaired(redis_app, raw, alice, kind, key_of_kind(redis_app, raw, alice, kind))
    assert not redis_app.extensions["statsapi.redis"].is_down  # a bad key is no outage
    assert alice.get("/api/admin/users").status_code == 403  # and grants nothing


def limit_keys(app: Flask, raw: redis.Redis) -> list[bytes]:
    return list(raw.scan_iter(match=app.extensions["statsapi.redis"].key("limits", "*")))


@pytest.mark.parametrize("how", [*MALFORMED, "negative", "no expiry"])
def test_a_malformed_limit_counter_restarts_and_still_limits(
    how: str, make_app: Callable[..., Flask], raw: redis.Redis
) -> None:
    app = make_app(REDIS_URL="default", RATELIMIT_USER="4/minute")
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.get("/api/auth/me").status_code == 200
    (counter,) = limit_keys(app, raw)
    if how == "negative":
        raw.set(counter, "-1000000", keepttl=True)
    elif how == "no expiry":
        raw.set(counter, "0")
    else:
        MALFORMED[how](raw, counter)
    statuses = [alice.get("/api/auth/me").status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]  # counted afresh from this request
    assert raw.type(counter) == b"string"
    assert int(raw.get(counter) or 0) == 6
    assert 0 < int(raw.pttl(counter)) <= 60_000
    assert not app.extensions["statsapi.redis"].is_down


def test_idempotency_replays_do_not_live_in_redis(redis_app: Flask, raw: redis.Redis) -> None:
    """Nothing to forge there: stored replays are in PostgreSQL (SPEC: Redis is never the only copy)."""
    alice = Factory(redis_app).actor(redis_app.test_client(), username="alice")
    body = {"amount": "-1.00", "currency": "EUR", "category": "x", "occurred_at": "2026-03-01T09:30:00Z"}
    first = alice.post("/api/records", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    prefix = redis_app.extensions["statsapi.redis"].prefix
    kinds = {key.decode()[len(prefix) :].split(":")[0] for key in raw.scan_iter(match=f"{prefix}*")}
    assert kinds <= {"auth", "stats", "limits"}
    assert (
        alice.post("/api/records", json=body, headers={"Idempotency-Key": "k-1"}).get_data()
        == first.get_data()
    )


# -- item 4: the key space belongs to one database --------------------------------------------
@pytest.fixture
def second_database() -> Iterator[str]:
    """Another migrated database (its own identity), as the app role."""
    name = f"statsapi_test_other_{uuid.uuid4().hex[:8]}"
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    owner_url = PG_URL_TEMPLATE.format(name=name)
    from statsapi.migrate import upgrade

    upgrade(owner_url)
    try:
        yield as_app_role(owner_url)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def two_deployments(
    make_app: Callable[..., Flask], second_database: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Flask, Flask]]:
    """Two apps, two databases, one Redis: default prefix, or one explicit shared prefix."""
    shared = getattr(request, "param", None)
    extra = {"REDIS_KEY_PREFIX": shared} if shared else {}
    first = make_app(REDIS_URL=REDIS_URL, **extra)
    second = make_app(REDIS_URL=REDIS_URL, DATABASE_URL=second_database, **extra)
    try:
        yield first, second
    finally:
        for app in (first, second):
            delete_keys(REDIS_URL, app.extensions["statsapi.redis"].prefix)


def test_the_default_prefix_names_the_database(two_deployments: tuple[Flask, Flask]) -> None:
    for app in two_deployments:
        identity = database_identity(get_database(app).engine)
        assert app.extensions["statsapi.settings"].redis_key_prefix is None
        assert app.extensions["statsapi.redis"].prefix == f"statsapi:{identity.replace('-', '')[:12]}:"
    first, second = two_deployments
    assert first.extensions["statsapi.redis"].prefix != second.extensions["statsapi.redis"].prefix


@pytest.mark.parametrize("two_deployments", [None, "statsapi-shared-test:"], indirect=True)
def test_two_databases_on_one_redis_never_see_each_others_entries(
    two_deployments: tuple[Flask, Flask], raw: redis.Redis
) -> None:
    """Same user ids on both sides; default prefix, and even one explicit shared prefix."""
    first, second = two_deployments
    root = Factory(first).actor(first.test_client(), role="admin", username="root")  # user 1 here
    Factory(first).record(root, amount="-10.00")
    alice = Factory(second).actor(second.test_client(), username="alice")  # user 1 there
    for _ in range(2):
        Factory(second).record(alice, amount="-3.00")
    assert (root.user_id, alice.user_id) == (1, 1)
    root_stats = root.get("/api/stats")
    assert root.get("/api/admin/users").status_code == 200
    for _round in range(2):  # the second round reads what the other app just cached
        alice_stats = alice.get("/api/stats")
        assert alice_stats.status_code == 200
        assert alice_stats.json["record_count"] == 2, alice_stats.json
        assert alice.get("/api/admin/users").status_code == 403
        again = root.get("/api/stats")
        assert again.json["record_count"] == 1
        assert again.get_data() == root_stats.get_data()
        assert root.get("/api/admin/users").status_code == 200
    # Copy every entry of the first app into the second's key space: none opens there.
    source, target = (app.extensions["statsapi.redis"].prefix for app in (first, second))
    if source != target:
        for key in raw.scan_iter(match=f"{source}*"):
            if raw.type(key) == b"string":
                raw.set(target + key.decode()[len(source) :], raw.get(key) or b"")
    alice_stats = alice.get("/api/stats")
    assert alice_stats.json["record_count"] == 2
    assert alice.get("/api/admin/users").status_code == 403


def test_redis_is_unused_until_the_database_names_the_key_space(
    monkeypatch: pytest.MonkeyPatch, raw: redis.Redis
) -> None:
    """Fail closed: no identity, no Redis (never a shared fallback prefix); bound once readable."""
    monkeypatch.setattr(state_redis, "IDENTITY_RETRY_SECONDS", 0.0)
    name = f"statsapi_test_unmigrated_{uuid.uuid4().hex[:8]}"
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL_TEMPLATE.format(name=name)
    engine = create_engine(url)
    try:
        keyspace = state_redis.KeySpace(lambda: database_identity(engine))
        connection = state_redis.RedisConnection(REDIS_URL, keyspace=keyspace, timeout=1)
        with pytest.raises(state_redis.RedisUnavailable):
            connection.key("limits", "x")
        with pytest.raises(state_redis.RedisUnavailable):
            connection.call(lambda client: client.set("statsapi:must-not-exist", "1"))
        assert raw.get("statsapi:must-not-exist") is None
        assert connection.probe()[0] is False
        from statsapi.migrate import upgrade

        upgrade(url)
        identity = database_identity(engine)
        assert connection.key("limits", "x") == f"statsapi:{identity.replace('-', '')[:12]}:limits:x"
        assert connection.probe() == (True, None)
        connection.close()
    finally:
        engine.dispose()
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
