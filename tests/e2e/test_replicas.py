"""Three API replicas, one truth (issue 11): whatever one replica does, the others honour
at once, because every piece of shared state lives in PostgreSQL or Redis.

One stack of 3 replicas (tests/e2e/replicas.py) serves the module. Each proof runs while
a mixed load (writes, record pages, stats, /me from several clients) goes through nginx,
and the load itself must see no failure. A replica is addressed directly (past nginx)
where the proof needs to know which replica answered.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import pytest
import requests

from tests.conftest import PG_ADMIN_DSN

from .replicas import FAIL_TIMEOUT_SECONDS, Replicas, running_replicas
from .traffic import MixedLoad, Outcome, User, bearer, create_user, login, record_body

pytestmark = pytest.mark.e2e

REPLICAS = 3
USER_BUDGET = 30  # RATELIMIT_USER per minute: small, so a burst can spend it
LOAD_CLIENTS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[Replicas]:
    settings = {"RATELIMIT_USER": f"{USER_BUDGET}/minute", "RATELIMIT_ELEVATED": "100000/minute"}
    with running_replicas(REPLICAS, "replicas", **settings) as stack:
        yield stack


@pytest.fixture(scope="module")
def admin_token(cluster: Replicas) -> str:
    return cluster.access_token()


@pytest.fixture(scope="module")
def load_tokens(cluster: Replicas, admin_token: str) -> list[str]:
    """Tokens of admins (the elevated budget), so the load never meets a rate limit."""
    return [login(cluster, create_user(cluster, admin_token, "admin")) for _ in range(LOAD_CLIENTS)]


@pytest.fixture
def load(cluster: Replicas, load_tokens: list[str]) -> Iterator[MixedLoad]:
    """Mixed traffic through nginx for the length of the test; none of it may fail."""
    with MixedLoad(cluster, load_tokens) as traffic:
        yield traffic
    outcomes = traffic.results()
    assert len(outcomes) >= LOAD_CLIENTS, "the load never got going"
    assert traffic.failures() == []


def me(base_url: str, token: str) -> requests.Response:
    return requests.get(f"{base_url}/api/auth/me", headers=bearer(token), timeout=20)


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))

    def released(call: Callable[[], Any]) -> Any:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(released, calls))


def in_database(stack: Replicas, query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={stack.db_name}"))
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())
    finally:
        conn.close()


# ---- shared budget --------------------------------------------------------------------------------
def test_a_users_rate_limit_is_one_budget_across_replicas(
    cluster: Replicas, admin_token: str, load: MixedLoad
) -> None:
    user = create_user(cluster, admin_token)
    token = login(cluster, user)
    sent = REPLICAS * USER_BUDGET  # what three separate budgets would all have allowed
    targets = [cluster.replica_url(n % REPLICAS) for n in range(sent)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda url: (url, me(url, token)), targets))
    statuses = Counter(response.status_code for _, response in responses)
    assert statuses == {200: USER_BUDGET, 429: sent - USER_BUDGET}, statuses
    # Every replica refused some: each of them saw the budget the others had spent.
    refused_by = {url for url, response in responses if response.status_code == 429}
    assert refused_by == {cluster.replica_url(n) for n in range(REPLICAS)}
    for _, response in responses:
        assert response.headers["X-RateLimit-Limit"] == str(USER_BUDGET)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) > 0


# ---- revocation ------------------------------------------------------------------------------------
def _revoke_by_logout(cluster: Replicas, user: User, token: str, admin_token: str, via: int) -> None:
    response = requests.post(f"{cluster.replica_url(via)}/api/auth/logout", headers=bearer(token), timeout=20)
    assert response.status_code == 204, response.text


def _revoke_by_admin(cluster: Replicas, user: User, token: str, admin_token: str, via: int) -> None:
    response = requests.post(
        f"{cluster.replica_url(via)}/api/admin/users/{user.id}/revoke-tokens",
        headers=bearer(admin_token),
        timeout=20,
    )
    assert response.status_code == 204, response.text


@pytest.mark.parametrize("revoke", [_revoke_by_logout, _revoke_by_admin], ids=["logout", "admin-revoke"])
@pytest.mark.parametrize("via", range(REPLICAS))
def test_a_revocation_on_one_replica_is_refused_by_the_others_on_the_next_request(
    cluster: Replicas, admin_token: str, load: MixedLoad, revoke: Callable[..., None], via: int
) -> None:
    user = create_user(cluster, admin_token)
    token = login(cluster, user)
    # Every replica (and both workers of each, with some luck) has honoured the token.
    for n in range(REPLICAS):
        for _ in range(2):
            assert me(cluster.replica_url(n), token).status_code == 200
    revoke(cluster, user, token, admin_token, via)
    others = [n for n in range(REPLICAS) if n != via]
    next_requests = at_once([lambda n=n: me(cluster.replica_url(n), token) for n in others])
    for n, response in zip(others, next_requests, strict=True):
        assert response.status_code == 401, f"replica {n} still honours a token revoked on {via}"
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert me(cluster.replica_url(via), token).status_code == 401


# ---- read your writes --------------------------------------------------------------------------------
def _stats(cluster: Replicas, replica: int, token: str) -> dict[str, Any]:
    response = requests.get(f"{cluster.replica_url(replica)}/api/stats", headers=bearer(token), timeout=20)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_write_on_one_replica_shows_in_stats_read_from_another_at_once(
    cluster: Replicas, admin_token: str, load: MixedLoad
) -> None:
    user = create_user(cluster, admin_token)
    token = login(cluster, user)
    # Each replica writes once (15 requests: well inside the user's budget of 30).
    for writes, writer in enumerate(range(REPLICAS), start=1):
        readers = [n for n in range(REPLICAS) if n != writer]
        for reader in readers:
            _stats(cluster, reader, token)  # warm: the readers' cache holds the old answer
        response = requests.post(
            f"{cluster.replica_url(writer)}/api/records",
            json=record_body(f"write {writes}", amount=f"{writes}.00"),
            headers=bearer(token),
            timeout=20,
        )
        assert response.status_code == 201, response.text
        for reader in readers:
            totals = _stats(cluster, reader, token)["totals"]["EUR"]
            assert totals["count"] == writes, f"replica {reader} missed the write on {writer}"
            assert totals["max"] == f"{writes}.00"


# ---- idempotency ----------------------------------------------------------------------------------
def test_the_same_idempotency_key_on_two_replicas_at_once_creates_one_record(
    cluster: Replicas, admin_token: str, load: MixedLoad
) -> None:
    user = create_user(cluster, admin_token, "admin")  # the elevated budget: many trials
    token = login(cluster, user)
    trials = 18
    overlapping = 0
    for trial in range(trials):
        key = f"replicas-{trial}-{uuid.uuid4().hex}"
        pair = (trial % REPLICAS, (trial + 1) % REPLICAS)
        headers = {**bearer(token), "Idempotency-Key": key}

        def post(replica: int, headers: dict[str, str] = headers, key: str = key) -> tuple[float, float, Any]:
            started = time.monotonic()
            response = requests.post(
                f"{cluster.replica_url(replica)}/api/records",
                json=record_body(key),
                headers=headers,
                timeout=20,
            )
            return started, time.monotonic(), response

        (s1, e1, first), (s2, e2, second) = at_once([lambda r=r: post(r) for r in pair])
        overlapping += s1 < e2 and s2 < e1
        statuses = sorted([first.status_code, second.status_code])
        assert statuses in ([201, 201], [201, 409]), (statuses, first.text, second.text)
        ids = {r.json()["id"] for r in (first, second) if r.status_code == 201}
        assert len(ids) == 1, f"two records for one key: {ids}"
        rows = in_database(
            cluster, "SELECT id FROM records WHERE owner_id = %s AND description = %s", user.id, key
        )
        assert [row[0] for row in rows] == list(ids)
    assert overlapping >= trials // 2, "the two requests of a trial were hardly ever in flight together"
    keys = in_database(cluster, "SELECT count(*) FROM idempotency_keys WHERE user_id = %s", user.id)
    assert keys == [(trials,)]


# ---- one computation per key ------------------------------------------------------------------------
def _computations(cluster: Replicas) -> float:
    return sum(cluster.metric(n, "statsapi_stats_computations_total") for n in range(REPLICAS))


def test_the_stats_cache_computes_once_per_key_across_replicas(
    cluster: Replicas, admin_token: str, load_tokens: list[str]
) -> None:
    user = create_user(cluster, admin_token)
    token = login(cluster, user)
    for n in range(3):
        assert (
            requests.post(
                f"{cluster.replica_url(n)}/api/records",
                json=record_body(f"c{n}"),
                headers=bearer(token),
                timeout=20,
            ).status_code
            == 201
        )
    # The load reads no stats here: every computation counted below is one of ours.
    with MixedLoad(cluster, load_tokens, stats=False) as traffic:
        for query in ("", "?currency=EUR", "?category=replicas"):
            before = _computations(cluster)
            readers = [n % REPLICAS for n in range(3 * REPLICAS)]
            bodies = at_once(
                [
                    lambda n=n, query=query: requests.get(
                        f"{cluster.replica_url(n)}/api/stats{query}", headers=bearer(token), timeout=20
                    )
                    for n in readers
                ]
            )
            assert [b.status_code for b in bodies] == [200] * len(readers)
            assert len({b.json()["generated_at"] for b in bodies}) == 1, "answers computed more than once"
            assert _computations(cluster) - before == 1, (
                f"stats{query} computed more than once across replicas"
            )
    assert traffic.failures() == []


# ---- a replica dies ---------------------------------------------------------------------------------------
def _sent_to(line: dict[str, Any], address: str) -> bool:
    return address in [part.strip() for part in str(line.get("upstream", "")).split(",")]


def test_a_killed_replica_loses_only_its_requests_in_flight_and_no_acknowledged_write(
    cluster: Replicas, load_tokens: list[str], admin_token: str
) -> None:
    victim = 1
    address = cluster.replicas[victim].address
    tokens = load_tokens + [login(cluster, create_user(cluster, admin_token, "admin")) for _ in range(3)]
    try:
        # Each client rests its default 20 ms between requests: nginx's flood guard allows 50
        # a second per client address, which a faster app would otherwise exceed.
        with MixedLoad(cluster, tokens) as traffic:
            time.sleep(3)
            kill_started = time.monotonic()
            cluster.kill_replica(victim)
            killed = time.monotonic()
            time.sleep(min(6, FAIL_TIMEOUT_SECONDS - 2))
        outcomes = traffic.results()
        _judge_the_kill(cluster, outcomes, address, kill_started, killed, len(tokens))
        # The victim logged none of the requests sent after the kill (it served some before).
        logged_by_victim = {line.get("request_id") for line in cluster.access_lines(victim)}
        assert {o.request_id for o in outcomes if o.started < kill_started} & logged_by_victim
        assert not {o.request_id for o in outcomes if o.started > killed} & logged_by_victim
    finally:
        cluster.start_replica(victim)
        cluster.wait_ready(victim)


def _judge_the_kill(
    cluster: Replicas, outcomes: list[Outcome], address: str, kill_started: float, killed: float, clients: int
) -> None:
    nginx = {line["request_id"]: line for line in cluster.nginx_lines()}
    after = [o for o in outcomes if o.started > killed]
    assert len(after) > 20, "too little traffic after the kill to judge"
    # Everything sent after the kill succeeded, and nginx served it from the others.
    assert [o for o in after if not o.ok] == []
    served_after = Counter(nginx[o.request_id]["upstream"].split(",")[-1].strip() for o in after)
    assert address not in served_after and len(served_after) == REPLICAS - 1, served_after
    # nginx gave up on the victim at its first refused connection (max_fails=1): only
    # requests it had already picked the victim for tried it, each then retried elsewhere.
    tried_victim = [o for o in after if _sent_to(nginx[o.request_id], address)]
    assert len(tried_victim) <= clients, f"{len(tried_victim)} requests tried the dead replica"
    # A failure is a request that was in flight on the victim when it died.
    in_flight = {
        o.request_id
        for o in outcomes
        if o.started < killed and o.ended > kill_started and _sent_to(nginx.get(o.request_id, {}), address)
    }
    failed = [o for o in outcomes if not o.ok]
    assert {o.request_id for o in failed} <= in_flight, [(o.kind, o.status, o.error) for o in failed]
    # Every write the API acknowledged is in PostgreSQL.
    acknowledged = sorted(
        o.record_id for o in outcomes if o.kind == "write" and o.ok and o.record_id is not None
    )
    assert acknowledged, "no write was acknowledged"
    found = in_database(cluster, "SELECT id FROM records WHERE id = ANY(%s) ORDER BY id", acknowledged)
    assert [row[0] for row in found] == acknowledged
    # For the record (pytest -rP): what the kill cost. A request may succeed late: a reader of
    # a stats key the victim was computing waits for its lock lease to lapse (about 3 s).
    slowest = max(o.ended - o.started for o in after)
    print(
        f"kill: {len(failed)} failed, {len(in_flight)} in flight on the victim, "
        f"{len(after)} sent after the kill (all ok, slowest {slowest:.1f} s), "
        f"{len(acknowledged)} acknowledged writes all in PostgreSQL"
    )
