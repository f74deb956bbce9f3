"""``Idempotency-Key`` for record creation (SPEC §4 "Idempotency").

1. The key is *claimed* in its own short transaction (a row ``in_flight``), so a
   concurrent duplicate sees the claim at once and gets 409 instead of waiting.
2. The view runs; just before its unit of work commits, the response is stored in the
   same transaction as the records it created: both land or neither does.
3. A retry with the same key and body replays the stored response (and creates
   nothing); another body is a 422; an error releases the claim so the client may retry.

Stored replays are bounded per user: a response over ``IDEMPOTENCY_REPLAY_MAX_BYTES``
(a large batch) is kept as the ids of the records it created, not in full, and a replay
rebuilds it from those records as they are now (records deleted since are left out; the
status and headers are the first response's). Every stored key is a write that spent at
least one record of the user's daily quota, so a user's keys are bounded by that quota,
and their bytes by it times the size of an id.

A claim left behind by a crashed (or very slow) request expires after ``LEASE`` and can
be retaken; the lease fences the old holder out, so it can no longer complete the key.
Keys live ``TTL`` per user; a user's expired keys are removed when that user claims a new
one, and ``flask --app statsapi purge`` removes all expired keys at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, request
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..auth.guard import current_principal
from ..clock import utcnow
from ..db import rowcount
from ..models import IdempotencyKey
from ..problems import InvalidInput, Problem
from . import jsonio
from .apidoc import document_header
from .limits import Quota
from .quota import note_count
from .transaction import database
from .transaction import session as request_session

F = Callable[..., Any]

HEADER = "Idempotency-Key"
REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored first response to a retried Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
TTL = dt.timedelta(hours=24)
LEASE = dt.timedelta(seconds=60)
REPLAYED_HEADERS = ("Location", "ETag", "Content-Type")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, no spaces


@dataclass(frozen=True)
class Claimed:
    lease: dt.datetime  # our fence: only the holder of this lease may complete the key


@dataclass(frozen=True)
class Replay:
    status: int
    body: str
    headers: dict[str, str]
    ids: list[int] | None = None  # stored compact: rebuild the body from these


# Rebuilds a compact replay's body from the ids of the records its request created.
Rebuild = Callable[[list[int]], str]


@dataclass(frozen=True)
class InFlight:
    pass


@dataclass(frozen=True)
class Mismatch:
    pass


Outcome = Claimed | Replay | InFlight | Mismatch


def request_fingerprint(endpoint: str) -> str:
    """Digest of endpoint + JSON body, insensitive to key order and whitespace."""
    # The body was parsed (strictly) before this runs; parse failures never get here.
    canonical = json.dumps(jsonio.loads(request.get_data(cache=True)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{endpoint}\n{canonical}".encode()).hexdigest()


def claim(
    session: Session, *, user_id: int, key: str, endpoint: str, fingerprint: str, max_keys: int | None = None
) -> Outcome:
    # The user's expired keys go first: the table cleans itself, per user, as it is used.
    session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.expires_at <= utcnow())
    )
    session.commit()
    if max_keys is not None:
        _refuse_beyond(session, user_id=user_id, key=key, max_keys=max_keys)
    for _attempt in range(3):
        now = utcnow()
        if _insert_claim(
            session, user_id=user_id, key=key, endpoint=endpoint, fingerprint=fingerprint, now=now
        ):
            return Claimed(lease=now + LEASE)
        existing = session.get(IdempotencyKey, (user_id, key), populate_existing=True)
        if existing is None:
            continue  # released between our insert and read: try again
        if existing.expires_at <= now:
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.user_id == user_id,
                    IdempotencyKey.key == key,
                    IdempotencyKey.expires_at <= now,
                )
            )
            session.commit()
            continue
        return _judge(session, existing, fingerprint=fingerprint, now=now)
    return InFlight()


def _refuse_beyond(session: Session, *, user_id: int, key: str, max_keys: int) -> None:
    """429 when the user already holds ``max_keys`` live keys and this one is new."""
    mine = IdempotencyKey.user_id == user_id
    held, oldest = session.execute(
        select(func.count(), func.min(IdempotencyKey.expires_at)).where(mine)
    ).one()
    if held < max_keys or session.get(IdempotencyKey, (user_id, key)) is not None:
        return
    session.rollback()
    now = utcnow()
    expires = oldest if oldest is not None else now
    wait = max(int((expires - now).total_seconds()), 1)
    quota = Quota("idempotency-keys", max_keys, int(TTL.total_seconds()))
    headers_on = note_count(quota, f"user:{user_id}", held, expires.timestamp(), refused=True)
    raise Problem(
        429,
        f"Too many live Idempotency-Keys (idempotency-keys): at most {max_keys} per user, each kept 24 h; "
        f"the oldest expires in {wait} s. Nothing was done; retry with this key then.",
        slug="quota-exceeded",
        headers=None if headers_on else {"Retry-After": str(wait)},
    )


def _insert_claim(
    session: Session, *, user_id: int, key: str, endpoint: str, fingerprint: str, now: dt.datetime
) -> bool:
    """Take the key with a fresh in-flight row; False when a row for it exists already."""
    session.expunge_all()
    session.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            endpoint=endpoint,
            request_hash=fingerprint,
            state="in_flight",
            created_at=now,
            locked_until=now + LEASE,
            expires_at=now + TTL,
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def _judge(session: Session, existing: IdempotencyKey, *, fingerprint: str, now: dt.datetime) -> Outcome:
    """What an unexpired key someone already holds means for this request."""
    if existing.request_hash != fingerprint:
        return Mismatch()
    if existing.state == "done":
        ids = existing.response_ids
        return Replay(
            existing.response_status or 200,
            existing.response_body or "",
            dict(existing.response_headers or {}),
            [int(i) for i in ids] if isinstance(ids, list) else None,
        )
    if existing.locked_until > now:
        return InFlight()
    # Abandoned by a crashed worker: take it over, unless someone else just did.
    taken = rowcount(
        session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.user_id == existing.user_id,
                IdempotencyKey.key == existing.key,
                IdempotencyKey.state == "in_flight",
                IdempotencyKey.locked_until == existing.locked_until,
            )
            .values(locked_until=now + LEASE)
        )
    )
    session.commit()
    return Claimed(lease=now + LEASE) if taken == 1 else InFlight()


def _ours(user_id: int, key: str, lease: dt.datetime) -> Any:
    """The key's row, still in flight under our lease (not taken over meanwhile)."""
    return (
        (IdempotencyKey.user_id == user_id)
        & (IdempotencyKey.key == key)
        & (IdempotencyKey.state == "in_flight")
        & (IdempotencyKey.locked_until == lease)
    )


def release(*, user_id: int, key: str, lease: dt.datetime) -> None:
    session = database().new_session()
    try:
        session.execute(delete(IdempotencyKey).where(_ours(user_id, key, lease)))
        session.commit()
    except Exception:  # the lease expires anyway; never mask the original error
        current_app.logger.warning("could not release idempotency key", exc_info=True)
    finally:
        session.close()


def _store(*, user_id: int, key: str, lease: dt.datetime, response: Response, compact: bool = False) -> None:
    body: str | None = response.get_data(as_text=True)
    ids = None
    if compact and len(body or "") > current_app.extensions["statsapi.settings"].idempotency_replay_max_bytes:
        ids, body = [item["id"] for item in json.loads(body or "{}")["items"]], None
    stored = request_session().execute(
        update(IdempotencyKey)
        .where(_ours(user_id, key, lease))
        .values(
            state="done",
            response_status=response.status_code,
            response_body=body,
            response_ids=ids,
            response_headers={h: response.headers[h] for h in REPLAYED_HEADERS if h in response.headers},
        )
    )
    if rowcount(stored) != 1:
        # Our lease ran out and another request took the key over: it owns the outcome.
        # Raising here rolls this request's unit of work back, so nothing is created twice.
        raise Problem(
            409,
            "This request outlived its Idempotency-Key lease and was not applied; retry with the same key.",
            slug="idempotency-conflict",
            headers={"Retry-After": "1"},
        )


def purge_expired(session: Session) -> int:
    return rowcount(session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow())))


_HEADER_DOC = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "description": "Retry safely: the same key and body replay the first response "
    "(header `Idempotent-Replayed: true`); another body is 422; in flight is 409. "
    "Keys live 24 h per user, at most 10 000 live keys each by default (429 beyond). A large "
    "batch's replay is rebuilt from the records it created, as they are now.",
}


def idempotent(endpoint: str, *, rebuild: Rebuild | None = None) -> Callable[[F], F]:
    """Make a POST view honour ``Idempotency-Key``. Place it below ``auth_required``,
    ``arguments`` (so invalid requests never claim a key) and ``commits`` (its stored
    response commits with the view's work), and above ``response``.

    ``rebuild``: for a view whose body is ``{"items": [{"id": ...}, ...]}``, large
    responses are stored as their ids and rebuilt with it on replay."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = request.headers.get(HEADER)
            if key is None:
                return func(*args, **kwargs)
            if not _KEY.match(key):
                raise InvalidInput(HEADER, "1-255 visible ASCII characters.")
            user_id = current_principal().id
            outcome = _claim_for_request(user_id=user_id, key=key, endpoint=endpoint)
            if not isinstance(outcome, Claimed):
                return _answer(outcome, rebuild)
            try:
                response = func(*args, **kwargs)
                # In the view's unit of work: the response lands with what it created, or neither.
                _store(
                    user_id=user_id,
                    key=key,
                    lease=outcome.lease,
                    response=response,
                    compact=rebuild is not None,
                )
            except BaseException:
                release(user_id=user_id, key=key, lease=outcome.lease)
                raise
            return response

        return document_header(wrapper, _HEADER_DOC, (409, 422))

    return decorator


def _claim_for_request(*, user_id: int, key: str, endpoint: str) -> Outcome:
    """Claim the key in a short transaction of its own (a duplicate sees it at once)."""
    session = database().new_session()
    try:
        return claim(
            session,
            user_id=user_id,
            key=key,
            endpoint=endpoint,
            fingerprint=request_fingerprint(endpoint),
            max_keys=current_app.extensions["statsapi.settings"].idempotency_max_keys,
        )
    finally:
        session.close()


def _answer(outcome: Outcome, rebuild: Rebuild | None) -> Response:
    """The stored first response for a replay; a problem for a mismatch or a key in flight."""
    if isinstance(outcome, Mismatch):
        raise Problem(
            422,
            "This Idempotency-Key was already used with a different request.",
            slug="idempotency-mismatch",
            errors={HEADER: ["Already used with another body."]},
        )
    if not isinstance(outcome, Replay):
        raise Problem(
            409,
            "A request with this Idempotency-Key is still in progress; retry shortly.",
            slug="idempotency-conflict",
            headers={"Retry-After": "1"},
        )
    body = outcome.body
    if outcome.ids is not None and rebuild is not None:
        body = rebuild(outcome.ids)
    response = current_app.response_class(body, status=outcome.status)
    response.headers.update(outcome.headers)
    response.headers["Idempotent-Replayed"] = "true"
    return response
