"""The batch and read fast paths keep every guarantee of the slow ones they replace:

* ``dump_records`` is byte for byte what ``RecordSchema`` dumps (varied currencies,
  signs, unicode, null descriptions, timestamps), for ORM records, bulk-insert rows and
  what the API returns;
* valid batch items load to exactly what marshmallow loads, invalid ones fall back to
  marshmallow (same messages, same ``records.N.field`` paths);
* a batch is all or nothing: an invalid item, or a database constraint failing in the
  records INSERT or in the audit INSERT, leaves no record and no audit event;
* every created record has its audit event (after-state, actor, request id);
* a records page and a single record are one SELECT, with nothing loaded lazily after it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from statsapi.models import Record, RecordRow
from statsapi.models.record import snapshot
from statsapi.money import ISO_4217, amount_bound, format_minor, parse_amount
from statsapi.schemas.records import (
    RecordBatchSchema,
    RecordCreateSchema,
    RecordListSchema,
    RecordPageSchema,
    RecordSchema,
    _ValidItemLoader,
    dump_record,
    dump_records,
)

from .conftest import owner_engine
from .factories import Actor, record_body
from .recordtools import assert_problem, audit_events, captured_sql, db_session, record_count

UTC = dt.UTC
NOW = dt.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)

# (currency, amount_minor, description): 0, 2, 3 and 4 minor units, signs, bounds, unicode.
VARIED = [
    ("JPY", 0, "zero yen"),
    ("JPY", -1, None),
    ("JPY", amount_bound("JPY") - 1, "largest JPY"),
    ("EUR", -1250, "Weekly shop"),
    ("EUR", 5, "five cents"),
    ("EUR", -(amount_bound("EUR") - 1), "smallest EUR"),
    ("USD", 100, ""),
    ("BHD", -1, "one fils, negative"),
    ("BHD", 123456, "naïve café — “quoted” ✓"),
    ("KWD", 999, "中文描述 and emoji 🎉"),
    ("CLF", 12345, "four decimals"),
    ("UYW", -7, "line\nbreak\tand tab"),
    ("GBP", 0, "\u2028 separator and \\ backslash and </script>"),
    ("CHF", 10**10, None),
]


def orm_records() -> list[Record]:
    return [
        Record(
            id=2**40 + index,
            owner_id=7 + index,
            amount_minor=amount,
            currency=currency,
            category=f"cat é {index}",
            occurred_at=dt.datetime(
                2020 + index, 1 + index % 12, 1, 0, 0, 0, index * 7919 % 1_000_000, tzinfo=UTC
            ),
            description=description,
            created_at=NOW if index % 2 else NOW.replace(microsecond=0),
            updated_at=NOW + dt.timedelta(seconds=index),
            version=1 + index,
        )
        for index, (currency, amount, description) in enumerate(VARIED)
    ]


def as_row(record: Record) -> RecordRow:
    return RecordRow(*(getattr(record, name) for name in RecordRow._fields))


def test_fast_dump_is_byte_identical_to_the_schema(app: Flask) -> None:
    records = orm_records()
    expected = app.json.dumps(RecordSchema(many=True).dump(records))
    assert app.json.dumps(dump_records(records)) == expected
    assert app.json.dumps(dump_records([as_row(r) for r in records])) == expected
    for record in records:
        assert app.json.dumps(dump_record(record)) == app.json.dumps(RecordSchema().dump(record))
    # The shapes around the items too (what the list and batch views send).
    page = {"items": records, "next_cursor": "abc.def"}
    assert app.json.dumps({**page, "items": dump_records(records)}) == app.json.dumps(
        RecordPageSchema().dump(page)
    )
    assert app.json.dumps({"items": dump_records(records)}) == app.json.dumps(
        RecordListSchema().dump({"items": records})
    )


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@st.composite
def any_record(draw: st.DrawFn) -> Record:
    currency = draw(st.sampled_from(sorted(ISO_4217)))
    bound = amount_bound(currency)
    moment = draw(
        st.datetimes(
            min_value=dt.datetime(1, 1, 2),
            max_value=dt.datetime(9999, 12, 30),
            timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]),
        )
    )
    return Record(
        id=draw(st.integers(1, 2**63 - 1)),
        owner_id=draw(st.integers(1, 2**63 - 1)),
        amount_minor=draw(st.integers(-bound + 1, bound - 1)),
        currency=currency,
        category=draw(_TEXT),
        occurred_at=moment,
        description=draw(st.none() | _TEXT),
        created_at=moment,
        updated_at=draw(st.sampled_from([moment, NOW])),
        version=draw(st.integers(1, 2**31 - 1)),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(any_record(), max_size=5))
def test_fast_dump_matches_the_schema_for_any_record(records: list[Record]) -> None:
    expected = json.dumps(RecordSchema(many=True).dump(records), sort_keys=True)
    assert json.dumps(dump_records(records), sort_keys=True) == expected
    assert json.dumps(dump_records([as_row(r) for r in records]), sort_keys=True) == expected


# -- loading ---------------------------------------------------------------------------------
_LOADER = _ValidItemLoader(RecordCreateSchema())
_VALUE = (
    st.none()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.sampled_from(["EUR", "JPY", "BHD", "usd", "XXX", "", " ", "1.5", "-0.001", "12", "1e3"])
    | st.sampled_from(
        ["2026-03-01T09:30:00Z", "2026-03-01T09:30:00+05:30", "2026-03-01 09:30", "9999-12-31T23:59:59-01:00"]
    )
    | st.sampled_from([" padded ", "a" * 64, "a" * 65, "b" * 501, "x\x00y", "bell\x07", "tab\tok", "ok"])
    | _TEXT
)
_KEYS = st.sampled_from(["amount", "currency", "category", "occurred_at", "description", "colour"])


def _marshmallow(item: Any) -> dict[str, Any] | None:
    try:
        return RecordCreateSchema().load(item)
    except ma.ValidationError:
        return None


_VALID = {
    "currency": st.sampled_from(["EUR", "JPY", "BHD", "CLF"]),
    "amount": st.sampled_from(["1", "-12.5", "0.125", "9999999999999", "-0.0001"]),
    "category": st.sampled_from(["groceries", "  padded ", "ünï", "a" * 64]),
    "occurred_at": st.sampled_from(["2026-03-01T09:30:00Z", "2026-03-01T09:30:00.5-07:00"]),
    "description": st.sampled_from([None, "", " kept ", "tab\tand\nnewline", "d" * 500]),
}


@st.composite
def mostly_valid_item(draw: st.DrawFn) -> Any:
    """Items valid field by field most of the time, so both paths are exercised; any
    field may be junk, missing or unknown."""
    item: dict[str, Any] = {}
    for key, valid in _VALID.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        item[key] = draw(valid if draw(st.integers(0, 4)) else _VALUE)
    if draw(st.integers(0, 9)) == 0:
        item[draw(_KEYS)] = draw(_VALUE)
    return item


@settings(max_examples=1500, deadline=None)
@given(mostly_valid_item() | st.dictionaries(_KEYS, _VALUE, max_size=6) | _VALUE)
def test_fast_load_accepts_exactly_what_marshmallow_accepts(item: Any) -> None:
    fast = _LOADER.load(item)
    assert fast == _marshmallow(item)


@pytest.mark.parametrize(
    "item",
    [
        record_body(),
        record_body(description=None),
        {k: v for k, v in record_body().items() if k != "description"},
        record_body(amount="7", currency="JPY", category="  padded  ", description="  kept  "),
        record_body(amount="-0.125", currency="BHD", occurred_at="2026-03-01T23:30:00-05:00"),
        record_body(amount="9999999999999.9999", currency="CLF", description="ünïcödé 🎉"),
    ],
)
def test_fast_load_equals_marshmallow_for_valid_items(item: dict[str, Any]) -> None:
    fast = _LOADER.load(item)
    assert fast is not None
    assert fast == _marshmallow(item)


def test_a_batch_loads_to_what_nested_marshmallow_loads() -> None:
    items = [record_body(amount=f"{i}.5", description=None if i % 2 else f"d{i}") for i in range(50)]
    loaded = RecordBatchSchema().load({"records": items})["records"]
    assert loaded == [RecordCreateSchema().load(item) for item in items]


def test_an_invalid_last_item_is_reported_with_its_index(as_user: Actor, clean: Flask) -> None:
    items = [record_body(amount=f"{i}.00") for i in range(1000)]
    items[999] = record_body(amount="1.234")
    response = as_user.post("/api/records/batch", json={"records": items})
    body = assert_problem(response, 422, "validation-error", errors=["records.999.amount"])
    assert body["errors"]["records.999.amount"] == ["EUR amounts have at most 2 decimal places"]
    assert record_count(clean) == 0
    assert audit_events(clean) == []


# -- what a batch writes ---------------------------------------------------------------------
def test_batch_response_is_what_is_stored_and_each_record_is_audited(as_user: Actor, clean: Flask) -> None:
    currencies = ["JPY", "EUR", "BHD", "CLF"]
    items = [
        record_body(
            amount=f"-{i}" if currencies[i % 4] == "JPY" else f"{i}.{i % 10}",
            currency=currencies[i % 4],
            category=f"ĉat {i % 9}",
            occurred_at=f"2026-0{1 + i % 9}-1{i % 10}T0{i % 10}:30:00.{i:06d}+02:00",
            description=None if i % 3 == 0 else ["NULL", '{a,"b"}\\', "it's", f"описание {i}"][i % 4],
        )
        for i in range(300)
    ]
    response = as_user.post(
        "/api/records/batch", json={"records": items}, headers={"X-Request-ID": "batch-42"}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    returned = response.json["items"]
    assert [r["amount"] for r in returned] == [
        format_minor(parse_amount(i["amount"], i["currency"]), i["currency"]) for i in items
    ]
    with db_session(clean) as session:
        by_id = {r.id: r for r in session.scalars(select(Record))}
    stored = [by_id[r["id"]] for r in returned]
    # Byte-identical to marshmallow's dump of the rows as PostgreSQL stored them.
    assert response.get_data() == clean.json.response(RecordListSchema().dump({"items": stored})).get_data()

    events = audit_events(clean, action="record.create")
    assert [e.target_id for e in events] == [str(r["id"]) for r in returned]  # ids follow item order
    for event, record in zip(events, stored, strict=True):
        assert event.after == snapshot(record)
        assert event.before is None
        assert event.actor_id == as_user.user_id
        assert event.request_id == "batch-42"
        assert event.target_type == "record"


@pytest.fixture
def currency_row_removed(clean: Flask) -> Iterator[str]:
    """CLF missing from the reference table: the records' foreign key refuses it."""
    engine = owner_engine(clean)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM currencies WHERE code = 'CLF'"))
    try:
        yield "CLF"
    finally:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO currencies (code, minor_units) VALUES ('CLF', 4)"))


def test_a_constraint_failing_mid_batch_writes_nothing(
    currency_row_removed: str, as_user: Actor, clean: Flask
) -> None:
    items = [record_body(amount=f"{i}.00") for i in range(1000)]
    items[500] = record_body(amount="1.2345", currency=currency_row_removed)
    response = as_user.post(
        "/api/records/batch", json={"records": items}, headers={"Idempotency-Key": "fk-1"}
    )
    assert_problem(response, 409, "conflict")
    assert record_count(clean) == 0
    assert audit_events(clean) == []


@pytest.fixture
def audit_refusing_poison(clean: Flask) -> Iterator[str]:
    """A CHECK on audit_events that one item's event fails: the records INSERT succeeded."""
    engine = owner_engine(clean)
    with engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE audit_events ADD CONSTRAINT test_no_poison "
                "CHECK (after->>'category' IS DISTINCT FROM 'poison')"
            )
        )
    try:
        yield "poison"
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events DROP CONSTRAINT test_no_poison"))


def test_a_failing_audit_insert_rolls_the_records_back(
    audit_refusing_poison: str, as_user: Actor, clean: Flask
) -> None:
    items = [record_body(amount=f"{i}.00") for i in range(1000)]
    items[700] = record_body(category=audit_refusing_poison)
    response = as_user.post("/api/records/batch", json={"records": items})
    assert_problem(response, 409, "conflict")
    assert record_count(clean) == 0
    assert audit_events(clean) == []
    # The same batch without the poisoned item goes through, whole.
    items[700] = record_body()
    assert as_user.post("/api/records/batch", json={"records": items}).status_code == 201
    assert record_count(clean) == 1000
    assert len(audit_events(clean, action="record.create")) == 1000


def test_batch_replay_is_the_stored_response_byte_for_byte(as_user: Actor, clean: Flask) -> None:
    batch = {"records": [record_body(amount=f"{i}.25", currency="BHD") for i in range(20)]}
    headers = {"Idempotency-Key": "replay-bytes"}
    first = as_user.post("/api/records/batch", json=batch, headers=headers)
    again = as_user.post("/api/records/batch", json=batch, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert record_count(clean) == 20


# -- reading ---------------------------------------------------------------------------------
def test_a_records_page_is_one_select_and_identical_to_the_schema_dump(
    as_admin: Actor, as_user: Actor, clean: Flask
) -> None:
    items = [
        record_body(amount=f"{i}", currency="JPY", description=None if i % 2 else "ß ✓") for i in range(60)
    ]
    assert as_user.post("/api/records/batch", json={"records": items}).status_code == 201
    with captured_sql(clean) as statements:
        page = as_admin.get("/api/records?limit=50")
    assert page.status_code == 200
    on_records = [s for s, _ in statements if "records" in s]
    assert len(on_records) == 1 and on_records[0].lstrip().upper().startswith("SELECT")
    assert "records" in statements[-1][0]  # nothing (no lazy load) after the page's SELECT

    with db_session(clean) as session:
        stored = list(session.scalars(select(Record).order_by(Record.occurred_at.desc(), Record.id.desc())))
    body = page.json
    assert [r["id"] for r in body["items"]] == [r.id for r in stored[:50]]
    expected = RecordPageSchema().dump({"items": stored[:50], "next_cursor": body["next_cursor"]})
    assert page.get_data() == clean.json.response(expected).get_data()


def test_a_single_record_is_one_select_and_identical_to_the_schema_dump(as_user: Actor, clean: Flask) -> None:
    created = as_user.post("/api/records", json=record_body(amount="0.001", currency="KWD", description=None))
    assert created.status_code == 201
    record_id = created.json["id"]
    with captured_sql(clean) as statements:
        fetched = as_user.get(f"/api/records/{record_id}")
    assert fetched.status_code == 200
    assert len([s for s, _ in statements if "records" in s]) == 1
    with db_session(clean) as session:
        stored = session.get(Record, record_id)
    expected = clean.json.response(RecordSchema().dump(stored)).get_data()
    assert fetched.get_data() == expected == created.get_data()
