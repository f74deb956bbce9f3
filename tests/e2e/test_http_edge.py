"""The HTTP edge under abuse, against the real servers: gunicorn with the repo's
gunicorn.conf.py (directly, as on Render or with ``docker run``) and nginx in front of it.

* an answer given before a large body is read never breaks the connection it was given on
  (directly) nor a pooled upstream connection another client then uses (behind nginx);
* a chunked body over the limit is a 413, not a truncated parse;
* clients dripping their headers cannot keep ``/health`` from answering;
* no ``Server: gunicorn`` banner; the HTTP -> HTTPS redirect ignores a forged Host.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest
import requests

from .stack import Stack

pytestmark = pytest.mark.e2e

LIMIT = 1024 * 1024  # MAX_CONTENT_LENGTH (default) and nginx's client_max_body_size
WITHIN_LIMIT = 300 * 1024  # "a body over ~64 KiB": more than gunicorn drains by itself
RECORD = {"amount": "12.34", "currency": "EUR", "category": "edge", "occurred_at": "2026-01-02T03:04:05Z"}


# ---- a minimal HTTP/1.1 client on one socket (requests hides which connection it uses) ------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def keeps_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def read_reply(sock: socket.socket) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response ({data[:80]!r})")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if status == 100:  # an interim answer to Expect: 100-continue; the real one follows
        return read_reply_from(sock, body)
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        body += chunk
    return Reply(status, headers, body[:length])


def read_reply_from(sock: socket.socket, already: bytes) -> Reply:
    class Prefixed:
        def __init__(self) -> None:
            self.pending = already

        def recv(self, size: int) -> bytes:
            if self.pending:
                out, self.pending = self.pending[:size], self.pending[size:]
                return out
            return sock.recv(size)

    return read_reply(Prefixed())  # type: ignore[arg-type]


def post(
    path: str, body: bytes, *, token: str | None = None, content_type: str = "application/json"
) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunked_post(path: str, body: bytes, token: str) -> bytes:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536]) for i in range(0, len(body), 65536)
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head.encode() + chunks + b"0\r\n\r\n"


HEALTH = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send a request; a server that answered early may stop reading, which is its right."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def gunicorn_socket(stack: Stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", stack.gunicorn_port), timeout=15)


# ---- item 6: an early rejection leaves a usable connection -------------------------------------------
def test_early_rejections_leave_the_connection_usable_directly(stack: Stack) -> None:
    """100 rounds of (big body answered before it is read, then /health on the same
    connection) against gunicorn: every follow-up is answered. A body within the limit is
    drained (the connection stays open); one over it is answered with Connection: close and
    the connection really closes, so the client knows to open a new one."""
    token = stack.access_token()
    # Anonymous requests soon meet the anonymous rate limit: a 429 is an early answer too.
    rejections = [
        (post("/api/records", b"x" * WITHIN_LIMIT), {401, 429}),  # no token
        (post("/api/records", b"x" * WITHIN_LIMIT, token=token, content_type="text/plain"), {415}),
        (post("/api/admin/users", b"x" * WITHIN_LIMIT, token="not-a-token"), {401, 429}),
        (post("/api/records", b"x" * (2 * LIMIT), token=token), {413}),  # over MAX_CONTENT_LENGTH
    ]
    failures: list[str] = []
    seen: Counter[tuple[str, bool]] = Counter()
    for round_no in range(100):
        request, expected = rejections[round_no % len(rejections)]
        with gunicorn_socket(stack) as sock:
            try:
                send_all(sock, request)
                rejected = read_reply(sock)
                assert rejected.status in expected, rejected.body
                seen[("over" if 413 in expected else "within", rejected.keeps_alive)] += 1
                assert rejected.headers["content-type"] == "application/problem+json"
                if rejected.keeps_alive:
                    sock.sendall(HEALTH)
                    follow_up = read_reply(sock)
                else:
                    sock.settimeout(5)
                    assert sock.recv(65536) == b"", "Connection: close announced, connection left open"
                    with gunicorn_socket(stack) as fresh:
                        fresh.sendall(HEALTH)
                        follow_up = read_reply(fresh)
                if follow_up.status != 200:
                    failures.append(f"round {round_no}: follow-up {follow_up.status}")
            except (OSError, AssertionError) as error:
                failures.append(f"round {round_no} ({expected}): {error!r}")
    assert failures == []
    # Bodies within the limit were drained and kept alive; only over-limit ones closed.
    assert seen == {("within", True): 75, ("over", False): 25}


def test_early_rejections_leave_the_connection_usable_through_nginx(stack: Stack) -> None:
    """The same 100 rounds through nginx, on one client keep-alive connection."""
    failures: list[str] = []
    with stack.client() as https:
        for round_no in range(100):
            try:
                rejected = https.post(
                    f"{stack.https_url}/api/records",
                    data=b"x" * WITHIN_LIMIT,
                    headers={"Content-Type": "application/json"},
                    timeout=15,
                )
                follow_up = https.get(f"{stack.https_url}/health", timeout=15)
            except requests.RequestException as error:
                failures.append(f"round {round_no}: {error!r}")
                continue
            if rejected.status_code not in (401, 429) or follow_up.status_code != 200:
                failures.append(f"round {round_no}: {rejected.status_code} then {follow_up.status_code}")
    assert failures == []


def test_a_poisoning_client_costs_a_victim_behind_nginx_no_502(stack: Stack) -> None:
    """While one client sends 300 KiB bodies that are refused unread, another client's 200
    writes all succeed: nginx never reuses an upstream connection the API is closing."""
    token = stack.access_token()
    stop = threading.Event()
    poisoned: Counter[int] = Counter()

    def poison() -> None:
        with stack.client() as attacker:
            while not stop.is_set():
                try:
                    response = attacker.post(
                        f"{stack.https_url}/api/records",
                        data=b"x" * WITHIN_LIMIT,
                        headers={"Content-Type": "application/json"},
                        timeout=15,
                    )
                    poisoned[response.status_code] += 1
                except requests.RequestException:
                    poisoned[0] += 1
                time.sleep(0.02)  # below nginx's flood limit (50 r/s), which would answer itself

    attackers = [threading.Thread(target=poison) for _ in range(2)]
    for thread in attackers:
        thread.start()
    statuses: Counter[int] = Counter()
    try:
        with stack.client() as victim:
            for _ in range(200):
                try:
                    response = victim.post(
                        f"{stack.https_url}/api/records",
                        json=RECORD,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=15,
                    )
                    statuses[response.status_code] += 1
                except requests.RequestException:
                    statuses[0] += 1
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=30)
    assert statuses == {201: 200}
    assert sum(poisoned.values()) >= 20 and set(poisoned) <= {401, 429}, poisoned


# ---- item 7: a chunked body over the limit is a 413 ---------------------------------------------
def _count_records(stack: Stack, token: str, category: str) -> int:
    with stack.client() as https:
        listed = https.get(
            f"{stack.https_url}/api/records",
            params={"category": category, "limit": 100},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    assert listed.status_code == 200, listed.text
    return len(listed.json()["items"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": "' + b"1" * (2 * LIMIT + LIMIT // 2) + b'"}',
        json.dumps({**RECORD, "category": "chunked-padding"}).encode() + b" " * (2 * LIMIT + LIMIT // 2),
        json.dumps({**RECORD, "category": "chunked-padding"}).encode() + b" " * (LIMIT + 1),
    ],
    ids=["long-string", "valid-record-then-whitespace", "one-byte-over"],
)
def test_chunked_body_over_the_limit_is_413_and_stores_nothing(stack: Stack, body: bytes) -> None:
    token = stack.access_token()
    with gunicorn_socket(stack) as sock:
        send_all(sock, chunked_post("/api/records", body, token))
        reply = read_reply(sock)
    with gunicorn_socket(stack) as sock:
        send_all(sock, post("/api/records", body, token=token))
        with_length = read_reply(sock)
    assert reply.status == 413, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    # The same problem as for a body whose Content-Length is over the limit.
    problem, expected = json.loads(reply.body), json.loads(with_length.body)
    assert problem["status"] == 413 and problem["detail"]
    assert {k: v for k, v in problem.items() if k != "request_id"} == {
        k: v for k, v in expected.items() if k != "request_id"
    }
    assert not reply.keeps_alive  # the rest of the chunked body is still on its way
    assert _count_records(stack, token, "chunked-padding") == 0


def test_chunked_body_within_the_limit_is_stored(stack: Stack) -> None:
    token = stack.access_token()
    body = json.dumps({**RECORD, "category": "chunked-ok"}).encode() + b" " * (LIMIT - 200)
    with gunicorn_socket(stack) as sock:
        sock.sendall(chunked_post("/api/records", body, token))
        created = read_reply(sock)
        assert created.status == 201, created.body
        assert created.keeps_alive
        sock.sendall(HEALTH)
        assert read_reply(sock).status == 200
    assert _count_records(stack, token, "chunked-ok") == 1


# ---- item 8: slow headers without nginx ---------------------------------------------------------------
ATTACKERS = 24
DRIP_EVERY = 2.0
ATTACK_SECONDS = 20.0
PROBE_TIMEOUT = 3.0


DRIPPED_HEADERS = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Drip: "
DRIPPED_BODY = (
    b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{"
)


def probe_health_under_drip(stack: Stack, opening: bytes) -> tuple[Counter[str], Counter[str]]:
    """ATTACKERS connections straight to gunicorn each send ``opening``, then one more byte
    every DRIP_EVERY seconds (reconnecting when dropped), while /health is probed for
    ATTACK_SECONDS: the probes' outcomes, and how the attackers' connections ended."""
    stop = threading.Event()
    dropped: Counter[str] = Counter()
    lock = threading.Lock()

    def drip() -> None:
        while not stop.is_set():
            try:
                sock = gunicorn_socket(stack)
            except OSError:
                time.sleep(0.2)
                continue
            with sock:
                try:
                    sock.sendall(opening)
                    while not stop.wait(DRIP_EVERY):
                        # Look for the server's answer before dripping on: writing to a
                        # connection the server has closed would only earn a reset.
                        if select.select([sock], [], [], 0)[0]:
                            answer = sock.recv(4096)
                            with lock:
                                dropped[answer.split(b" ", 2)[1].decode() if answer else "closed"] += 1
                            break
                        sock.sendall(b"a")
                except OSError:
                    with lock:
                        dropped["reset"] += 1

    threads = [threading.Thread(target=drip) for _ in range(ATTACKERS)]
    for thread in threads:
        thread.start()
    outcomes: Counter[str] = Counter()
    try:
        time.sleep(2 * DRIP_EVERY)  # let every attacker get hold of the server first
        deadline = time.monotonic() + ATTACK_SECONDS
        while time.monotonic() < deadline:
            try:
                probe = requests.get(f"{stack.gunicorn_url}/health", timeout=PROBE_TIMEOUT)
                outcomes["answered" if probe.status_code == 200 else str(probe.status_code)] += 1
            except requests.RequestException:
                outcomes["unanswered"] += 1
            time.sleep(0.25)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=DRIP_EVERY + 5)
    return outcomes, dropped


@pytest.mark.slow
def test_dripping_headers_do_not_starve_health_without_nginx(stack: Stack) -> None:
    """24 connections dripping one header byte every 2 s for 20 s: at least 95 % of /health
    probes are answered within 3 s, and the dripping connections are cut with a 408."""
    outcomes, dropped = probe_health_under_drip(stack, DRIPPED_HEADERS)
    total = sum(outcomes.values())
    assert total >= 20, outcomes
    assert outcomes["answered"] >= 0.95 * total, outcomes
    # GUNICORN_HEADER_TIMEOUT (10 s) ended the attackers' requests while the probes ran.
    assert dropped["408"] >= ATTACKERS, dropped


@pytest.mark.slow
def test_dripping_bodies_do_not_starve_health_without_nginx(stack: Stack) -> None:
    """The same with complete headers and a 1000-byte body dripped a byte every 2 s: the
    worker waits for such a body in its event loop, so no thread is held."""
    outcomes, _dropped = probe_health_under_drip(stack, DRIPPED_BODY)
    total = sum(outcomes.values())
    assert total >= 20, outcomes
    assert outcomes["answered"] >= 0.95 * total, outcomes


def test_headers_sent_in_pieces_are_served(stack: Stack) -> None:
    """The worker reads headers off-thread: a request split over several packets, and a
    second one on the same connection, are answered as usual."""
    with gunicorn_socket(stack) as sock:
        for _ in range(2):
            for piece in (b"GET /hea", b"lth HTTP/1.1\r\nHo", b"st: localhost\r\n", b"\r\n"):
                sock.sendall(piece)
                time.sleep(0.05)
            reply = read_reply(sock)
            assert reply.status == 200 and json.loads(reply.body) == {"status": "ok"}


def test_an_endless_header_block_is_refused_with_431(stack: Stack) -> None:
    with gunicorn_socket(stack) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for number in range(90):
                sock.sendall(b"X-Filler-%d: %s\r\n" % (number, b"f" * 1000))  # never the blank line
        reply = read_reply(sock)
    assert reply.status == 431
    assert reply.headers["content-type"] == "application/problem+json"
    assert json.loads(reply.body)["status"] == 431


# ---- item 9: banners and the redirect ------------------------------------------------------------------
def test_gunicorn_sends_no_server_banner(stack: Stack) -> None:
    answers = [
        requests.get(f"{stack.gunicorn_url}/health", timeout=5),
        requests.get(f"{stack.gunicorn_url}/api/stats", timeout=5),
        requests.get(f"{stack.gunicorn_url}/no/such/page", timeout=5),
    ]
    assert [a.status_code for a in answers][::2] == [200, 404]
    assert answers[1].status_code in (401, 429)  # anonymous: refused by auth or its rate limit
    with gunicorn_socket(stack) as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        own_error = read_reply(sock)  # answered by gunicorn itself, before the app
    assert own_error.status == 400
    for headers in [{k.lower(): v for k, v in a.headers.items()} for a in answers] + [own_error.headers]:
        assert "server" not in headers, headers
    with stack.client() as https:
        through_nginx = https.get(f"{stack.https_url}/health", timeout=5)
    assert through_nginx.headers["Server"] == "nginx"  # no version, and not gunicorn's


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8443", "localhost.evil.example"])
def test_http_redirect_ignores_a_forged_host(stack: Stack, host: str) -> None:
    assert stack.nginx is not None
    with stack.client() as http:
        response = http.get(
            f"{stack.http_url}/api/records?page=2", headers={"Host": host}, allow_redirects=False, timeout=5
        )
    assert response.status_code == 308
    assert response.headers["Location"] == f"https://localhost:{stack.nginx.https_port}/api/records?page=2"
