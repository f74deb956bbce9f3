"""Records: scoping by role, filters, keyset pages, writes with audit and versioning."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar, cast

from sqlalchemy import BigInteger, Select, String, Table, and_, bindparam, case, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..clock import utcnow
from ..db import UTCDateTime, mark_owners_changed
from ..models import Record, RecordData, RecordRow, Role
from ..models.record import snapshot
from ..money import ISO_4217, MoneyError, parse_amount
from ..problems import Forbidden, InvalidInput, NotFound, StaleVersion
from . import audit

SelectT = TypeVar("SelectT", bound=Select[Any])

GROUP_BY = ("category", "day", "month")
WRITERS = frozenset({Role.USER, Role.ADMIN})

# Amount filters compare in units of 10^-4 (the finest ISO 4217 precision), so one
# bound works across currencies with 0, 2, 3 or 4 minor units.
FILTER_DIGITS = 4
_FILTER_AMOUNT = re.compile(r"^(-)?(0|[1-9][0-9]{0,12})(?:\.([0-9]{1,4}))?$")


def parse_amount_filter(text: str) -> int:
    match = _FILTER_AMOUNT.fullmatch(text)
    if match is None:
        raise MoneyError('must be a decimal string like "-12.50" with at most 4 decimal places')
    sign, whole, fraction = match.groups()
    value = int(whole) * 10**FILTER_DIGITS + int((fraction or "").ljust(FILTER_DIGITS, "0"))
    return -value if sign else value


def _scale_to_filter_units() -> Any:
    """SQL: the factor taking ``amount_minor`` to 10^-4 units, by currency."""
    by_digits: dict[int, list[str]] = {}
    for code, digits in ISO_4217.items():
        by_digits.setdefault(digits, []).append(code)
    whens = [
        (Record.currency.in_(sorted(codes)), 10 ** (FILTER_DIGITS - digits))
        for digits, codes in sorted(by_digits.items())
        if digits != 2
    ]
    return case(*whens, else_=10 ** (FILTER_DIGITS - 2))


@dataclass(frozen=True)
class RecordFilters:
    category: str | None = None
    currency: str | None = None
    occurred_from: dt.datetime | None = None
    occurred_to: dt.datetime | None = None
    min_amount: int | None = None  # 10^-4 units
    max_amount: int | None = None
    owner_id: int | None = None

    def normalised(self) -> dict[str, Any]:
        """Stable, JSON-safe form for cache keys and cursor digests."""
        return {
            key: (value.isoformat() if isinstance(value, dt.datetime) else value)
            for key in _FILTER_FIELDS
            if (value := getattr(self, key)) is not None
        }


_FILTER_FIELDS = tuple(sorted(field.name for field in fields(RecordFilters)))


def scope_owner(*, role: Role, user_id: int, requested_owner_id: int | None) -> int | None:
    """Whose records a caller sees: a user only its own; analysts and admins any owner or all."""
    if role is Role.USER:
        if requested_owner_id is not None:
            raise Forbidden("owner_id is for analysts and admins; users always see their own records.")
        return user_id
    return requested_owner_id


def apply_filters(query: SelectT, filters: RecordFilters, owner_id: int | None) -> SelectT:
    conditions = []
    if owner_id is not None:
        conditions.append(Record.owner_id == owner_id)
    if filters.category is not None:
        conditions.append(Record.category == filters.category)
    if filters.currency is not None:
        conditions.append(Record.currency == filters.currency)
    if filters.occurred_from is not None:
        conditions.append(Record.occurred_at >= filters.occurred_from)
    if filters.occurred_to is not None:
        conditions.append(Record.occurred_at < filters.occurred_to)
    if filters.min_amount is not None or filters.max_amount is not None:
        conditions.extend(_amount_conditions(filters))
    return query.where(and_(*conditions)) if conditions else query


def _amount_conditions(filters: RecordFilters) -> list[Any]:
    if filters.currency is not None:
        # One currency: exact integer bounds in its minor units keep the index usable.
        scale = 10 ** (FILTER_DIGITS - ISO_4217[filters.currency])
        conditions = []
        if filters.min_amount is not None:
            conditions.append(Record.amount_minor >= -(-filters.min_amount // scale))
        if filters.max_amount is not None:
            conditions.append(Record.amount_minor <= filters.max_amount // scale)
        return conditions
    scaled = Record.amount_minor * _scale_to_filter_units()
    conditions = []
    if filters.min_amount is not None:
        conditions.append(scaled >= filters.min_amount)
    if filters.max_amount is not None:
        conditions.append(scaled <= filters.max_amount)
    return conditions


def search(
    session: Session,
    *,
    owner_id: int | None,
    filters: RecordFilters,
    limit: int,
    after: tuple[dt.datetime, int] | None = None,
) -> list[RecordData]:
    """Newest first (``occurred_at``, then ``id``); ``limit + 1`` rows for paging.

    Plain rows, not ORM objects: a page is only read, and loading instances (identity
    map, state tracking) costs more than the query. One SELECT, nothing lazy after it.
    """
    records = cast(Table, Record.__table__)
    query = apply_filters(select(records), filters, owner_id)
    if after is not None:
        query = query.where(tuple_(Record.occurred_at, Record.id) < tuple_(*after))
    query = query.order_by(Record.occurred_at.desc(), Record.id.desc()).limit(limit + 1)
    return cast(list[RecordData], session.execute(query).all())


def owned_by_ids(session: Session, *, owner_id: int, ids: Sequence[int]) -> list[RecordData]:
    """The owner's records among ``ids``, in id order (those deleted since are missing)."""
    records = cast(Table, Record.__table__)
    query = select(records).where(records.c.id.in_(ids), records.c.owner_id == owner_id)
    return cast(list[RecordData], session.execute(query.order_by(records.c.id)).all())


def get_visible(session: Session, *, record_id: int, role: Role, user_id: int) -> Record:
    """Another user's record is indistinguishable from a missing one (404)."""
    record = session.get(Record, record_id)
    if record is None or (role is Role.USER and record.owner_id != user_id):
        raise NotFound(f"Record {record_id} was not found.")
    return record


def _new_record(owner_id: int, data: Mapping[str, Any], now: dt.datetime) -> Record:
    return Record(
        owner_id=owner_id,
        amount_minor=parse_amount(data["amount"], data["currency"]),
        currency=data["currency"],
        category=data["category"],
        occurred_at=data["occurred_at"],
        description=data.get("description"),
        created_at=now,
        updated_at=now,
    )


def create(session: Session, *, owner_id: int, data: Mapping[str, Any]) -> Record:
    record = _new_record(owner_id, data, utcnow())
    session.add(record)
    session.flush()
    audit.record_change(session, actor_id=owner_id, action="record.create", target=record)
    mark_owners_changed(session, [owner_id])
    return record


def create_many(session: Session, *, owner_id: int, items: Sequence[Mapping[str, Any]]) -> list[RecordRow]:
    """All or nothing, in the caller's transaction: one INSERT for the records and one for
    their audit events (SPEC §3: the after-state, actor and request id of each create).
    Core statements, not ORM objects: a thousand instances cost more CPU than the rest
    of the batch."""
    if not items:
        return []
    now = utcnow()
    columns = {
        "amount_minor": [parse_amount(data["amount"], data["currency"]) for data in items],
        "currency": [data["currency"] for data in items],
        "category": [data["category"] for data in items],
        "occurred_at": [data["occurred_at"] for data in items],
        "description": [data.get("description") for data in items],
    }
    if session.get_bind().dialect.name == "postgresql":
        ids = _insert_unnested(session, owner_id=owner_id, now=now, columns=columns)
    else:
        ids = _insert_each(session, owner_id=owner_id, now=now, columns=columns)
    records = [
        RecordRow(ident, owner_id, amount_minor, currency, category, occurred_at, description, now, now, 1)
        for ident, amount_minor, currency, category, occurred_at, description in zip(
            ids, *columns.values(), strict=True
        )
    ]
    audit.record_many(
        session,
        actor_id=owner_id,
        action="record.create",
        target_type="record",
        items=[(r.id, snapshot(r)) for r in records],
        occurred_at=now,
    )
    mark_owners_changed(session, [owner_id])
    return records


# One array per column, unnested by the server: a single parameter set, where a multi-row
# VALUES list costs a rendering step per row in SQLAlchemy and psycopg2 and 9 000 literals
# for the server to parse (a third of the CPU and of the time, measured). Rows go in in
# item order, so the ids the sequence hands out ascend in item order (what SQLAlchemy's
# own insertmanyvalues relies on): sorted, they map back to the items.
_INSERT_UNNESTED = text(
    """
    INSERT INTO records (owner_id, amount_minor, currency, category, occurred_at, description,
                         created_at, updated_at, version)
    SELECT :owner_id, u.amount_minor, u.currency, u.category, u.occurred_at, u.description, :now, :now, 1
    FROM unnest(CAST(:amount_minor AS BIGINT[]), CAST(:currency AS VARCHAR[]),
                CAST(:category AS VARCHAR[]), CAST(:occurred_at AS TIMESTAMPTZ[]),
                CAST(:description AS VARCHAR[]))
         WITH ORDINALITY AS u(amount_minor, currency, category, occurred_at, description, n)
    ORDER BY u.n
    RETURNING id
    """
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("amount_minor", type_=ARRAY(BigInteger())),
    bindparam("currency", type_=ARRAY(String())),
    bindparam("category", type_=ARRAY(String())),
    bindparam("occurred_at", type_=ARRAY(UTCDateTime())),
    bindparam("description", type_=ARRAY(String())),
)


def _insert_unnested(
    session: Session, *, owner_id: int, now: dt.datetime, columns: Mapping[str, list[Any]]
) -> list[int]:
    ids = session.scalars(_INSERT_UNNESTED, {"owner_id": owner_id, "now": now, **columns}).all()
    return sorted(ids)


def _insert_each(
    session: Session, *, owner_id: int, now: dt.datetime, columns: Mapping[str, list[Any]]
) -> list[int]:
    """Any other database (SQLite for local runs): executemany, ids in parameter order."""
    table = cast(Table, Record.__table__)
    values = [
        {**dict(zip(columns, row, strict=True)), "owner_id": owner_id, "created_at": now, "updated_at": now}
        for row in zip(*columns.values(), strict=True)
    ]
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, values))


def update(session: Session, *, record: Record, actor_id: int, changes: Mapping[str, Any]) -> Record:
    before = record.snapshot()
    currency = changes.get("currency", record.currency)
    if currency != record.currency and "amount" not in changes:
        # The stored amount means nothing in another currency (12.34 EUR is not 12.340 BHD):
        # the client must say what the amount is in the new one.
        raise InvalidInput(
            "amount",
            f"Changing the currency from {record.currency} to {currency} needs the amount in "
            f"{currency}: send amount and currency together.",
        )
    if "amount" in changes:
        try:
            record.amount_minor = parse_amount(changes["amount"], currency)
        except MoneyError as error:
            raise InvalidInput("amount", str(error)) from None
        record.currency = currency
    for name in ("category", "occurred_at", "description"):
        if name in changes:
            setattr(record, name, changes[name])
    if not session.is_modified(record):
        return record  # nothing changed: no new version, no audit noise
    record.updated_at = utcnow()
    _flush_versioned(session, record_id=record.id)
    audit.record_change(session, actor_id=actor_id, action="record.update", target=record, before=before)
    mark_owners_changed(session, [record.owner_id])
    return record


def delete(session: Session, *, record: Record, actor_id: int) -> None:
    snapshot, owner_id, record_id = record.snapshot(), record.owner_id, record.id
    session.delete(record)
    _flush_versioned(session, record_id=record_id)
    audit.record(
        session,
        actor_id=actor_id,
        action="record.delete",
        target_type="record",
        target_id=record_id,
        before=snapshot,
    )
    mark_owners_changed(session, [owner_id])


def _flush_versioned(session: Session, *, record_id: int) -> None:
    """Flush an UPDATE/DELETE guarded by the version; a lost race is a 412 if the record
    changed, a 404 if it is gone (a concurrent delete won), never a silent overwrite."""
    try:
        session.flush()
    except StaleDataError:
        session.rollback()  # the unit of work is void either way
        if session.get(Record, record_id) is None:
            raise NotFound(f"Record {record_id} was not found.") from None
        raise StaleVersion("The record changed since you read it; fetch it again.") from None


_COPY_COLUMNS = (
    "owner_id", "amount_minor", "currency", "category", "occurred_at",
    "description", "created_at", "updated_at", "version",
)  # fmt: skip


def bulk_insert(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many pre-validated rows fast (seeding, imports): COPY on PostgreSQL,
    executemany elsewhere. No audit per row and no cache bump: callers do both once."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(insert(Record), list(rows))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(
            [v.isoformat() if isinstance(v, dt.datetime) else v for v in (row[c] for c in _COPY_COLUMNS)]
        )
    buffer.seek(0)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY records ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()
