"""Every validation rule of SPEC §3–§4 for records, with the exact error key.

Bodies (POST /api/records, PATCH /api/records/{id}) and query strings (GET /api/records,
GET /api/stats). A rejected write stores nothing; the database constraints reject the
same values if the API is bypassed.
"""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
import pytest
import sqlalchemy.exc
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from statsapi.db import get_database
from statsapi.schemas.records import RecordCreateSchema

from .factories import Actor, Factory, record_body
from .recordtools import assert_problem, db_session, record_count

LIST_PATHS = ["/api/records", "/api/stats"]


def rejected(actor: Actor, app: Flask, body: Any, key: str) -> dict[str, Any]:
    """POST ``body`` → 422 validation-error with exactly ``key`` in ``errors``; nothing stored."""
    response = actor.post("/api/records", json=body)
    problem = assert_problem(response, 422, "validation-error", errors=[key])
    assert problem["errors"][key]
    assert all(isinstance(m, str) and m for m in problem["errors"][key])
    assert record_count(app) == 0
    return problem


def accepted(actor: Actor, body: Any) -> dict[str, Any]:
    response = actor.post("/api/records", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


# -- amount ----------------------------------------------------------------------------
@pytest.mark.parametrize("amount", [12.5, 12, 0, -3, 1e3, True])
def test_amount_as_json_number_is_422(amount: Any, as_user: Actor, clean: Flask) -> None:
    problem = rejected(as_user, clean, record_body(amount=amount), "amount")
    if not isinstance(amount, bool):
        assert "string" in problem["errors"]["amount"][0]


def test_amount_as_raw_json_nan_or_infinity_literal_is_422(as_user: Actor, clean: Flask) -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        raw = f'{{"amount": {literal}, "currency": "USD", "category": "x", "occurred_at": "2026-01-01T00:00:00Z"}}'
        response = as_user.post("/api/records", data=raw, content_type="application/json")
        assert_problem(response, 422, "validation-error", errors=["amount"])
    assert record_count(clean) == 0


@pytest.mark.parametrize(
    "amount",
    [
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "1e3",
        "1E3",
        "1.5e2",
        "+1",
        "01",
        ".5",
        "1.",
        "",
        " 1",
        "1,00",
        "−1",
        "abc",
    ],
)
def test_amount_spellings_that_are_not_plain_decimals_are_422(
    amount: str, as_user: Actor, clean: Flask
) -> None:
    rejected(as_user, clean, record_body(amount=amount, currency="USD"), "amount")


@pytest.mark.parametrize(
    ("currency", "too_precise", "exact", "formatted"),
    [
        ("USD", "1.001", "1.01", "1.01"),
        ("USD", "0.001", "-0.1", "-0.10"),
        ("JPY", "1.5", "1500", "1500"),
        ("JPY", "1.0", "-7", "-7"),
        ("BHD", "1.0001", "1.001", "1.001"),
        ("CLF", "1.00001", "1.0001", "1.0001"),
    ],
)
def test_decimals_are_limited_by_the_currency(
    currency: str, too_precise: str, exact: str, formatted: str, as_user: Actor, clean: Flask
) -> None:
    problem = rejected(as_user, clean, record_body(amount=too_precise, currency=currency), "amount")
    if len(too_precise.partition(".")[2]) <= 4:  # more than 4 is malformed for every currency
        assert currency in problem["errors"]["amount"][0]
    created = accepted(as_user, record_body(amount=exact, currency=currency))
    assert created["amount"] == formatted


@pytest.mark.parametrize(
    "amount", ["10000000000000", "-10000000000000", "10000000000000.00", "99999999999999"]
)
def test_amount_at_or_beyond_ten_to_the_thirteen_is_422(amount: str, as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, record_body(amount=amount, currency="USD"), "amount")


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("9999999999999.99", "USD", 999999999999999), ("-9999999999999.99", "USD", -999999999999999),
     ("9999999999999", "JPY", 9999999999999), ("9999999999999.9999", "CLF", 99999999999999999)],
)  # fmt: skip
def test_largest_amounts_are_stored_exactly(
    amount: str, currency: str, minor: int, as_user: Actor, clean: Flask
) -> None:
    created = accepted(as_user, record_body(amount=amount, currency=currency))
    assert created["amount"] == amount
    with db_session(clean) as session:
        stored = session.execute(
            text("SELECT amount_minor FROM records WHERE id = :id"), {"id": created["id"]}
        )
        assert stored.scalar_one() == minor
    assert as_user.get(f"/api/records/{created['id']}").json["amount"] == amount


def test_negative_zero_is_stored_as_zero(as_user: Actor) -> None:
    assert accepted(as_user, record_body(amount="-0.00", currency="USD"))["amount"] == "0.00"


def test_amount_and_currency_are_required(as_user: Actor, clean: Flask) -> None:
    body = record_body()
    del body["amount"], body["currency"], body["category"], body["occurred_at"]
    response = as_user.post("/api/records", json=body)
    assert_problem(
        response, 422, "validation-error", errors=["amount", "currency", "category", "occurred_at"]
    )
    assert record_count(clean) == 0


@pytest.mark.parametrize("field", ["amount", "currency", "category", "occurred_at"])
def test_required_fields_may_not_be_null(field: str, as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, {**record_body(), field: None}, field)


# -- currency --------------------------------------------------------------------------
@pytest.mark.parametrize("currency", ["usd", "Usd", "US", "USDD", "ZZZ", "XAU", "", " USD", 840, ["USD"]])
def test_currency_must_be_a_known_upper_case_iso_code(currency: Any, as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, record_body(currency=currency, amount="1"), "currency")


# -- category and description ----------------------------------------------------------
@pytest.mark.parametrize(
    "category", ["", "   ", "\t\n", "x" * 65, "a\x00b", "a\x1fb", "bell\x07", "del\x7f", 7, None]
)
def test_bad_category_is_422(category: Any, as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, {**record_body(), "category": category}, "category")


def test_category_is_trimmed_on_save_and_64_chars_are_fine(as_user: Actor, clean: Flask) -> None:
    assert accepted(as_user, record_body(category="  food \t"))["category"] == "food"
    assert accepted(as_user, record_body(category="x" * 64))["category"] == "x" * 64
    assert accepted(as_user, record_body(category=" " + "y" * 62 + " "))["category"] == "y" * 62
    assert accepted(as_user, record_body(category="Café ☕"))["category"] == "Café ☕"
    # 64 is the documented maxLength of what is sent, padding included (and of the trimmed text).
    response = as_user.post("/api/records", json=record_body(category=" " + "y" * 64 + " "))
    assert_problem(response, 422, "validation-error", errors=["category"])
    with db_session(clean) as session:
        categories = set(session.execute(text("SELECT category FROM records")).scalars())
    assert categories == {"food", "x" * 64, "y" * 62, "Café ☕"}


def test_description_longer_than_500_is_422(as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, record_body(description="d" * 501), "description")
    rejected(as_user, clean, record_body(description="bad\x00byte"), "description")
    rejected(as_user, clean, record_body(description=5), "description")


def test_description_may_be_500_chars_null_missing_or_multiline(as_user: Actor) -> None:
    assert accepted(as_user, record_body(description="d" * 500))["description"] == "d" * 500
    assert accepted(as_user, record_body(description=None))["description"] is None
    body = record_body()
    del body["description"]
    assert accepted(as_user, body)["description"] is None
    assert (
        accepted(as_user, record_body(description="line one\n\tline two"))["description"]
        == "line one\n\tline two"
    )


# -- occurred_at -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-03-01T09:30:00",  # naive
        "2026-03-01T09:30:00.5",  # naive with fraction
        "2026-03-01",  # date only
        "2026-03-01 09:30:00Z",  # space is not RFC 3339's separator here
        "2026-02-30T09:30:00Z",  # no such day
        "2026-03-01T25:00:00Z",
        "2026-03-01T09:30Z",  # seconds are required
        "2026-03-01T09:30:00+0200",  # offset needs a colon
        "yesterday",
        "",
        1772357400,
    ],
)
def test_bad_occurred_at_is_422(occurred_at: Any, as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, record_body(occurred_at=occurred_at), "occurred_at")


@pytest.mark.parametrize(
    ("sent", "returned"),
    [
        ("2026-03-01T09:30:00Z", "2026-03-01T09:30:00Z"),
        ("2026-03-01T09:30:00+00:00", "2026-03-01T09:30:00Z"),
        ("2026-03-01T09:30:00+02:00", "2026-03-01T07:30:00Z"),
        ("2026-01-31T23:30:00-02:00", "2026-02-01T01:30:00Z"),
        ("2026-03-01T09:30:00.123456Z", "2026-03-01T09:30:00.123456Z"),
        ("2026-03-01t09:30:00z", "2026-03-01T09:30:00Z"),
    ],
)
def test_occurred_at_is_stored_and_returned_in_utc(sent: str, returned: str, as_user: Actor) -> None:
    created = accepted(as_user, record_body(occurred_at=sent))
    assert created["occurred_at"] == returned
    assert as_user.get(f"/api/records/{created['id']}").json["occurred_at"] == returned


# -- unknown and read-only body fields -------------------------------------------------
@pytest.mark.parametrize("field", ["colour", "id", "owner_id", "version", "created_at", "amount_minor"])
def test_unknown_or_read_only_body_fields_are_422_on_create(field: str, as_user: Actor, clean: Flask) -> None:
    rejected(as_user, clean, {**record_body(), field: 1}, field)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"colour": "red"}, "colour"),
        ({"owner_id": 2}, "owner_id"),
        ({"version": 9}, "version"),
        ({"amount": 12.5}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"currency": "usd"}, "currency"),
        ({"currency": None}, "currency"),
        ({"category": "  "}, "category"),
        ({"category": "c" * 65}, "category"),
        ({"description": "d" * 501}, "description"),
        ({"occurred_at": "2026-03-01T09:30:00"}, "occurred_at"),
        ({"amount": "1.234", "currency": "USD"}, "amount"),
    ],
)
def test_patch_validates_like_create(
    changes: dict[str, Any], key: str, factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user, amount="1.00", currency="USD")
    response = as_user.patch(
        f"/api/records/{record.id}", json=changes, headers={"If-Match": f'"record-{record.id}-v1"'}
    )
    assert_problem(response, 422, "validation-error", errors=[key])
    with db_session(clean) as session:
        version = session.execute(
            text("SELECT version FROM records WHERE id = :id"), {"id": record.id}
        ).scalar()
    assert version == 1


@pytest.mark.parametrize("body", [[record_body()], "a string", 42, None])
def test_body_must_be_a_json_object(body: Any, as_user: Actor, clean: Flask) -> None:
    response = as_user.post("/api/records", json=body)
    assert response.status_code in {400, 422}
    assert response.mimetype == "application/problem+json"
    assert record_count(clean) == 0


# -- query strings ---------------------------------------------------------------------
@pytest.mark.parametrize("path", LIST_PATHS)
def test_unknown_query_parameters_are_422(path: str, as_user: Actor) -> None:
    assert_problem(as_user.get(f"{path}?colour=red"), 422, "validation-error", errors=["colour"])
    assert_problem(as_user.get(f"{path}?Category=food"), 422, "validation-error", errors=["Category"])


def test_group_by_is_unknown_on_records_and_page_args_on_stats(as_user: Actor) -> None:
    assert_problem(as_user.get("/api/records?group_by=day"), 422, "validation-error", errors=["group_by"])
    assert_problem(as_user.get("/api/stats?limit=5"), 422, "validation-error", errors=["limit"])
    assert_problem(as_user.get("/api/stats?group_by=year"), 422, "validation-error", errors=["group_by"])


@pytest.mark.parametrize("path", LIST_PATHS)
def test_user_sending_owner_id_is_403(path: str, as_user: Actor, as_other_user: Actor) -> None:
    assert_problem(as_user.get(f"{path}?owner_id={as_other_user.user_id}"), 403, "forbidden")
    # Even naming itself: the parameter is for analysts and admins.
    assert_problem(as_user.get(f"{path}?owner_id={as_user.user_id}"), 403, "forbidden")


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_bad_owner_id_is_422_for_analysts(path: str, value: str, as_analyst: Actor) -> None:
    assert_problem(as_analyst.get(f"{path}?owner_id={value}"), 422, "validation-error", errors=["owner_id"])


@pytest.mark.parametrize("path", LIST_PATHS)
def test_from_after_to_is_422(path: str, as_user: Actor) -> None:
    response = as_user.get(f"{path}?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z")
    assert_problem(response, 422, "validation-error", errors=["from"])
    # Offsets are compared as instants: 01:00+02:00 is before 00:00Z.
    response = as_user.get(f"{path}?from=2026-01-01T01:00:00%2B02:00&to=2026-01-01T00:00:00Z")
    assert response.status_code == 200


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize(
    ("name", "value"), [("from", "2026-01-01"), ("to", "2026-01-01T00:00:00"), ("from", "x")]
)
def test_bad_from_to_is_422(path: str, name: str, value: str, as_user: Actor) -> None:
    assert_problem(as_user.get(f"{path}?{name}={value}"), 422, "validation-error", errors=[name])


@pytest.mark.parametrize("path", LIST_PATHS)
def test_min_amount_above_max_amount_is_422(path: str, as_user: Actor) -> None:
    response = as_user.get(f"{path}?min_amount=10.01&max_amount=10")
    assert_problem(response, 422, "validation-error", errors=["min_amount"])
    assert as_user.get(f"{path}?min_amount=10&max_amount=10.00").status_code == 200
    assert as_user.get(f"{path}?min_amount=-5&max_amount=-4.9999").status_code == 200


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize("name", ["min_amount", "max_amount"])
@pytest.mark.parametrize("value", ["1e3", "NaN", "1.23456", "10000000000000", "%2B1", "abc", ""])
def test_bad_amount_filters_are_422(path: str, name: str, value: str, as_user: Actor) -> None:
    assert_problem(as_user.get(f"{path}?{name}={value}"), 422, "validation-error", errors=[name])


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize(
    ("name", "value"), [("currency", "usd"), ("currency", "ZZZ"), ("category", "c" * 65), ("category", "%20")]
)
def test_bad_category_and_currency_filters_are_422(path: str, name: str, value: str, as_user: Actor) -> None:
    assert_problem(as_user.get(f"{path}?{name}={value}"), 422, "validation-error", errors=[name])


@pytest.mark.parametrize("limit", ["0", "501", "x", "-1", "1.5", ""])
def test_bad_limit_is_422(limit: str, as_user: Actor) -> None:
    assert_problem(as_user.get(f"/api/records?limit={limit}"), 422, "validation-error", errors=["limit"])


@pytest.mark.parametrize("limit", ["1", "500"])
def test_limit_bounds_are_accepted(limit: str, factory: Factory, as_user: Actor) -> None:
    factory.record(as_user)
    factory.record(as_user)
    response = as_user.get(f"/api/records?limit={limit}")
    assert response.status_code == 200
    assert len(response.json["items"]) == min(int(limit), 2)


def test_overlong_cursor_is_422(as_user: Actor) -> None:
    assert_problem(
        as_user.get("/api/records?cursor=" + "a" * 513), 422, "validation-error", errors=["cursor"]
    )


# -- the database backs the rules -------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("currency", "usd"),
        ("currency", "ZZZ"),
        ("category", ""),
        ("category", " padded "),
        ("category", "c" * 65),
        ("description", "d" * 501),
        ("amount_minor", 10**17),
        ("occurred_at", None),
        ("amount_minor", None),
    ],
)
def test_database_refuses_what_the_api_refuses(
    column: str, value: Any, factory: Factory, clean: Flask
) -> None:
    owner = factory.user()
    row = {
        "owner_id": owner.id,
        "amount_minor": 100,
        "currency": "USD",
        "category": "ok",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "description": None,
    }
    row[column] = value
    engine = get_database(clean).engine
    with pytest.raises((sqlalchemy.exc.IntegrityError, sqlalchemy.exc.DataError)), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO records (owner_id, amount_minor, currency, category, occurred_at, description,"
                " created_at, updated_at, version) VALUES (:owner_id, :amount_minor, :currency, :category,"
                " :occurred_at, :description, now(), now(), 1)"
            ),
            row,
        )
    assert record_count(clean) == 0


# -- the documented patterns are exactly what the server accepts --------------------------
@pytest.fixture(scope="module")
def record_create_spec(app: Flask) -> dict[str, Any]:
    document = app.test_client().get("/openapi.json").get_json()
    return document["components"]["schemas"]["RecordCreate"]["properties"]


def _documented(prop: dict[str, Any], value: str) -> bool:
    return re.search(prop["pattern"], value) is not None and prop.get("minLength", 0) <= len(
        value
    ) <= prop.get("maxLength", 10**9)


def _loads(field: str, value: str) -> bool:
    body = {
        "amount": "1",
        "currency": "CLF",
        "category": "c",
        "occurred_at": "2026-01-01T00:00:00Z",
        field: value,
    }
    try:
        RecordCreateSchema().load(body)
    except ma.ValidationError as error:
        assert set(error.messages) == {field}
        return False
    return True


_EDGES = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2000\u3000\x00\x07\x7f\x9fa"
TEXT = (
    st.text(alphabet=st.characters(max_codepoint=0x3100), max_size=70)
    | st.text(alphabet=_EDGES, max_size=70)
    # Near the length limit with padding: trimmed and raw lengths disagree.
    | st.builds(
        lambda left, core, right: left + core + right,
        st.text(alphabet=" \t\x85\u3000", max_size=3),
        st.text(alphabet="xy é", min_size=60, max_size=64),
        st.text(alphabet=" \n\xa0", max_size=3),
    )
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=TEXT)
def test_category_and_description_patterns_match_the_server(
    record_create_spec: dict[str, Any], value: str
) -> None:
    for field in ("category", "description"):
        assert _documented(record_create_spec[field], value) == _loads(field, value), (field, value)


AMOUNTS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,14})(\.[0-9]{0,5})?\Z") | st.text(
    alphabet="-+.0123456789eE ", max_size=22
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=AMOUNTS)
def test_amount_pattern_matches_the_server(record_create_spec: dict[str, Any], value: str) -> None:
    # CLF has 4 decimals, the most any currency has: only the format rules apply.
    assert _documented(record_create_spec["amount"], value) == _loads("amount", value), value
