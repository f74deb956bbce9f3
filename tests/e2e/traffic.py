"""Users and a mixed client load for the multi-replica tests (and anyone else driving a
stack over HTTPS): every request is recorded with its own X-Request-ID, when it started
and ended, and what came back, so a test can line it up with nginx's and the replicas'
access lines afterwards.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests

from .stack import StackBase

RECORD_PAGE = "/api/records?limit=20"
# Longer than anything a healthy stack may make a client wait: nginx's proxy_read_timeout
# (30 s), which bounds a slow aggregation, and gunicorn's graceful stop. (A leader whose
# replica died holding a stats computation lock holds its waiters one 3 s lease.)
CLIENT_TIMEOUT = 35.0
_names = itertools.count()


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password: str
    role: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_user(stack: StackBase, admin_token: str, role: str = "user") -> User:
    """A new user, made by the admin through the stack's front door."""
    username = f"u{next(_names)}-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    with stack.client() as session:
        response = session.post(
            f"{stack.https_url}/api/admin/users",
            json={"username": username, "password": password, "role": role},
            headers=bearer(admin_token),
            timeout=30,
        )
    assert response.status_code == 201, response.text
    return User(int(response.json()["id"]), username, password, role)


def login(stack: StackBase, user: User, base_url: str | None = None) -> str:
    """An access token for ``user`` (see StackBase.login)."""
    return stack.login(user.username, user.password, base_url)


def record_body(marker: str, amount: str = "1.00", currency: str = "EUR") -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": currency,
        "category": "replicas",
        "occurred_at": "2026-01-02T03:04:05Z",
        "description": marker,
    }


@dataclass
class Outcome:
    """One request of a load: what was sent, when (time.monotonic), what came back."""

    kind: str  # "write", "page", "stats" or "me"
    request_id: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    record_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class MixedLoad:
    """``threads`` clients, each from a loopback address of its own (nginx's flood limit
    is per address) with its own token, cycling through a record write, a records page,
    the stats and /me until stopped. ``stats=False`` leaves the stats out (for a test that
    counts stats computations); ``pause`` is each client's rest between requests (at least
    20 ms keeps a client under nginx's flood guard, 50 requests a second per address,
    however fast the API answers)."""

    def __init__(
        self,
        stack: StackBase,
        tokens: list[str],
        *,
        base_url: str | None = None,
        stats: bool = True,
        pause: float = 0.02,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self.stack = stack
        self.tokens = tokens
        self.base_url = base_url or stack.https_url
        self.kinds = ("write", "page", "stats", "me") if stats else ("write", "page", "me")
        self.pause = pause
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(token,), daemon=True, name=f"load-{n}")
            for n, token in enumerate(tokens)
        ]

    def __enter__(self) -> MixedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        return self.results()

    def results(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.results() if not outcome.ok]

    def _client(self, token: str) -> None:
        with self.stack.client() as session:
            session.headers.update(bearer(token))
            for kind in itertools.cycle(self.kinds):
                if self._stop.is_set():
                    return
                outcome = self.send(session, kind)
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(self.pause)

    def send(self, session: requests.Session, kind: str) -> Outcome:
        request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        started = time.monotonic()
        try:
            if kind == "write":
                response = session.post(
                    f"{self.base_url}/api/records",
                    json=record_body(request_id),
                    headers=headers,
                    timeout=self.timeout,
                )
            else:
                path = {"page": RECORD_PAGE, "stats": "/api/stats", "me": "/api/auth/me"}[kind]
                response = session.get(f"{self.base_url}{path}", headers=headers, timeout=self.timeout)
        except requests.RequestException as error:
            return Outcome(kind, request_id, started, time.monotonic(), None, error=repr(error))
        record_id = int(response.json()["id"]) if kind == "write" and response.status_code == 201 else None
        return Outcome(kind, request_id, started, time.monotonic(), response.status_code, record_id)
