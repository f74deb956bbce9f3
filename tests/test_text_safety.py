"""Text is normalised and safe to display (issue 8, item 13): category, description and the
reason of a role grant are stored in Unicode NFC; bidi controls, zero-width characters and
every other invisible format character (Unicode category Cf) are refused with a 422 that names
the field. Usernames are ASCII letters, digits and ``_ . -`` only, so none of these can reach
them (checked below)."""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text as sql

from statsapi.schemas.fields import _REFUSED, FORMAT_CHARACTERS

from .factories import Actor, Factory, record_body
from .recordtools import assert_problem, audit_events, db_session, record_count

BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff"]
OTHER_FORMAT = ["\u00ad", "\u061c", "\u180e", "\U000e0001", "\U000e0041", "\U0001d173"]
INVISIBLE = BIDI + ZERO_WIDTH + OTHER_FORMAT


def _name(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def _in_the_middle(ch: str) -> str:
    return f"gro{ch}ceries"


@pytest.mark.parametrize("ch", INVISIBLE, ids=[_name(c) for c in INVISIBLE])
@pytest.mark.parametrize("field", ["category", "description"])
def test_create_refuses_invisible_format_characters(
    field: str, ch: str, as_user: Actor, clean: Flask
) -> None:
    response = as_user.post("/api/records", json=record_body(**{field: _in_the_middle(ch)}))

    body = assert_problem(response, 422, "validation-error", errors=[field])
    assert _name(ch) in body["errors"][field][0]
    assert record_count(clean) == 0


@pytest.mark.parametrize("ch", ["\u202e", "\ufeff", "\u200b"], ids=_name)
def test_leading_or_trailing_format_characters_are_refused_not_trimmed(ch: str, as_user: Actor) -> None:
    # str.strip() keeps them: a category padded with a BOM must not pass as the plain one.
    for category in (f"{ch}rent", f"rent{ch}"):
        response = as_user.post("/api/records", json=record_body(category=category))
        assert_problem(response, 422, "validation-error", errors=["category"])


def test_a_batch_names_the_record_and_field_and_stores_nothing(as_user: Actor, clean: Flask) -> None:
    records = [record_body(), record_body(), record_body(category="rent\u202egnp.exe"), record_body()]
    records[3]["description"] = "note\u2066hidden\u2069"

    response = as_user.post("/api/records/batch", json={"records": records})

    assert_problem(response, 422, "validation-error", errors=["records.2.category", "records.3.description"])
    assert record_count(clean) == 0


@pytest.mark.parametrize("field", ["category", "description"])
def test_patch_refuses_them_and_changes_nothing(
    field: str, factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user, category="rent", description="flat")
    response = as_user.patch(
        f"/api/records/{record.id}",
        json={field: "a\u200db"},
        headers={"If-Match": f'"record-{record.id}-v1"'},
    )

    assert_problem(response, 422, "validation-error", errors=[field])
    fetched = as_user.get(f"/api/records/{record.id}").json
    assert (fetched["category"], fetched["description"], fetched["version"]) == ("rent", "flat", 1)


def test_text_is_stored_in_nfc(as_user: Actor, clean: Flask) -> None:
    decomposed = "Cafe\u0301 Ko\u0308ln"  # e + combining acute, o + combining diaeresis
    response = as_user.post("/api/records", json=record_body(category=decomposed, description=decomposed))

    assert response.status_code == 201, response.json
    assert response.json["category"] == response.json["description"] == "Café Köln"
    assert unicodedata.is_normalized("NFC", response.json["category"])
    with db_session(clean) as session:
        stored = session.execute(sql("SELECT category, description FROM records")).one()
    assert tuple(stored) == ("Café Köln", "Café Köln")
    assert len(stored[0]) == 9  # one code point per letter, not 11


def test_both_spellings_are_one_category_for_filters_and_stats(as_user: Actor) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    for category in (composed, decomposed):
        assert as_user.post("/api/records", json=record_body(category=category)).status_code == 201

    for spelling in (composed, decomposed):
        listed = as_user.get("/api/records", query_string={"category": spelling}).json["items"]
        assert len(listed) == 2
    groups = as_user.get("/api/stats", query_string={"group_by": "category"}).json["groups"]
    assert [(g["key"], g["record_count"]) for g in groups] == [(composed, 2)]


@pytest.mark.parametrize(
    "text",
    ["مطعم العائلة", "שכר דירה", "東京 出張", "naïve café", "🍕 pizza", "tab\tand\nnewline"],
    ids=["arabic", "hebrew", "cjk", "accents", "emoji", "tab-newline"],
)
def test_visible_text_in_any_script_is_accepted(text: str, as_user: Actor) -> None:
    """Control for the refusals above: right-to-left scripts need no bidi controls."""
    response = as_user.post(
        "/api/records", json=record_body(category=text.split("\t", maxsplit=1)[0], description=text)
    )
    assert response.status_code == 201, response.json
    assert response.json["description"] == text


def test_role_grant_reason_is_checked_too(as_admin: Actor, factory: Factory, clean: Flask) -> None:
    user = factory.user(username="carol")
    path = f"/api/admin/users/{user.id}/role"

    refused = as_admin.put(path, json={"role": "analyst", "reason": "promotion \u202eelbissopmi"})
    assert_problem(refused, 422, "validation-error", errors=["reason"])
    assert audit_events(clean, action="role.grant") == []

    granted = as_admin.put(path, json={"role": "analyst", "reason": "Cafe\u0301 team lead"})
    assert granted.status_code == 200
    (event,) = audit_events(clean, action="role.grant")
    assert event.reason == "Café team lead"


@pytest.mark.parametrize(
    "username",
    ["ali\u200bce", "\u202ealice", "alice\ufeff", "\u0430lice", "cafe\u0301", "caf\u00e9"],
    ids=["zero-width", "bidi", "bom", "cyrillic-a", "combining", "accented"],
)
def test_usernames_admit_no_invisible_or_look_alike_characters(username: str, as_admin: Actor) -> None:
    response = as_admin.post(
        "/api/admin/users", json={"username": username, "password": "a long enough password", "role": "user"}
    )
    assert_problem(response, 422, "validation-error", errors=["username"])


# -- the documented contract ------------------------------------------------------------------
def _text_patterns(spec: dict[str, Any]) -> dict[str, str]:
    schemas = spec["components"]["schemas"]
    found = {}
    for name in ("RecordCreate", "RecordUpdate"):
        for field in ("category", "description"):
            found[f"{name}.{field}"] = schemas[name]["properties"][field]["pattern"]
    return found


def test_the_documented_patterns_refuse_every_bmp_format_character(client: Any) -> None:
    patterns = _text_patterns(client.get("/openapi.json").json)
    assert len(patterns) == 4
    bmp = [chr(c) for low, high in FORMAT_CHARACTERS for c in range(low, high + 1) if c <= 0xFFFF]
    for where, pattern in patterns.items():
        compiled = re.compile(pattern)
        assert compiled.fullmatch("Café Köln"), where  # control: ordinary text matches
        refused = [_name(ch) for ch in bmp if compiled.fullmatch(f"a{ch}b")]
        assert refused == [], (where, refused)


def test_the_frozen_table_covers_every_format_character_python_knows() -> None:
    frozen = {c for low, high in FORMAT_CHARACTERS for c in range(low, high + 1)}
    known = {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"}
    # A newer Unicode table may add format characters: the check refuses them anyway
    # (it asks unicodedata too), but the documented pattern should name them.
    assert known <= frozen, sorted(hex(c) for c in known - frozen)
    assert all(unicodedata.category(chr(c)) in {"Cf", "Cn"} for c in frozen)


def test_the_check_refuses_exactly_controls_and_format_characters() -> None:
    refused = {c for c in range(sys.maxunicode + 1) if _REFUSED.fullmatch(chr(c))}
    controls = {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"} - {0x09, 0x0A}
    frozen = {c for low, high in FORMAT_CHARACTERS for c in range(low, high + 1)}
    assert refused == controls | frozen
