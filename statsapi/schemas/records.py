from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import marshmallow as ma
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA

from ..clock import format_utc
from ..models import RecordData
from ..money import MoneyError, format_minor, parse_amount
from ..services.records import GROUP_BY, RecordFilters, parse_amount_filter
from ..services.stats import MAX_GROUP_ROWS
from .common import PageArgsSchema, StrictSchema, page_schema
from .fields import INT64_MAX, CleanText, Count, CurrencyCode, DecimalString, Id, RFC3339DateTime, Text

MAX_BATCH = 1000

# Examples: what Swagger UI's "Try it out" sends and shows, so they are real, valid records.
RECORD_INPUT_EXAMPLE = {
    "amount": "-12.50",
    "currency": "EUR",
    "category": "groceries",
    "occurred_at": "2026-03-14T09:26:53Z",
    "description": "Weekly shop",
}
SALARY_INPUT_EXAMPLE = {
    "amount": "2500.00",
    "currency": "EUR",
    "category": "salary",
    "occurred_at": "2026-03-01T08:00:00Z",
    "description": "March salary",
}


def _stored(record_id: int, data: dict[str, str]) -> dict[str, object]:
    stamp = "2026-03-14T09:27:05Z"
    return {"id": record_id, "owner_id": 7, **data, "created_at": stamp, "updated_at": stamp, "version": 1}


def _totals(count: int, total: str, avg: str, low: str, high: str) -> dict[str, object]:
    return {"count": count, "sum": total, "avg": avg, "min": low, "max": high}


class RecordSchema(ma.Schema):
    """A financial transaction as the API returns it."""

    class Meta:
        openapi = {"example": _stored(42, RECORD_INPUT_EXAMPLE)}

    id = Id(dump_only=True)
    owner_id = Id(dump_only=True)
    amount = DecimalString(metadata={"description": "Signed decimal string in the currency's minor units."})
    currency = Text(3, metadata={"description": "ISO 4217 code.", "example": "EUR", "pattern": "^[A-Z]{3}$"})
    category = Text(64, metadata={"example": "groceries"})
    occurred_at = RFC3339DateTime(metadata={"description": "When it happened, in UTC."})
    description = Text(500, allow_none=True)
    created_at = RFC3339DateTime()
    updated_at = RFC3339DateTime()
    version = ma.fields.Integer(
        metadata={
            "description": "Increments on every change (see ETag).",
            "format": "int32",
            "minimum": 1,
            "maximum": 2**31 - 1,
        }
    )


def dump_records(records: Iterable[RecordData]) -> list[dict[str, Any]]:
    """``RecordSchema().dump(records, many=True)``, field for field, at a fraction of the CPU.

    A page or a batch spends most of its time in marshmallow's per-field machinery, which
    does nothing here that a plain dict cannot (tests/test_records_fast_paths.py proves
    the two byte-identical). Records of one batch share their timestamps, so each distinct one is formatted
    once. ``RecordSchema`` stays the contract and the documentation: change both together.
    """
    stamps: dict[dt.datetime, str] = {}

    def stamp(value: dt.datetime) -> str:
        text = stamps.get(value)
        if text is None:
            text = stamps[value] = format_utc(value)
        return text

    return [
        {
            "id": r.id,
            "owner_id": r.owner_id,
            "amount": format_minor(r.amount_minor, r.currency),
            "currency": r.currency,
            "category": r.category,
            "occurred_at": stamp(r.occurred_at),
            "description": r.description,
            "created_at": stamp(r.created_at),
            "updated_at": stamp(r.updated_at),
            "version": r.version,
        }
        for r in records
    ]


def dump_record(record: RecordData) -> dict[str, Any]:
    """``RecordSchema().dump(record)`` (see ``dump_records``)."""
    return dump_records((record,))[0]


class _RecordFieldsSchema(StrictSchema):
    currency = CurrencyCode()
    amount = DecimalString(
        metadata={
            "description": "Signed decimal string, at most the currency's minor units, |amount| < 10^13."
        }
    )
    category = CleanText(validate=ma.validate.Length(min=1, max=64), metadata={"example": "groceries"})
    occurred_at = RFC3339DateTime(metadata={"description": "RFC 3339 with an offset; stored in UTC."})
    description = CleanText(
        trim=False, allow_none=True, validate=ma.validate.Length(max=500), metadata={"example": "Weekly shop"}
    )

    @ma.validates_schema(skip_on_field_errors=False)
    def _amount_fits_currency(self, data: dict[str, Any], **_: Any) -> None:
        if "amount" in data and "currency" in data:
            try:
                parse_amount(data["amount"], data["currency"])
            except MoneyError as error:
                raise ma.ValidationError(str(error), "amount") from None


class RecordCreateSchema(_RecordFieldsSchema):
    """A new record: every field but ``description`` is required."""

    class Meta:
        unknown = ma.RAISE
        openapi = {"example": RECORD_INPUT_EXAMPLE}

    currency = CurrencyCode(required=True)
    amount = DecimalString(required=True)
    category = CleanText(required=True, validate=ma.validate.Length(min=1, max=64))
    occurred_at = RFC3339DateTime(required=True)


class RecordUpdateSchema(_RecordFieldsSchema):
    """Fields to change; at least one. ``description: null`` clears it."""

    class Meta(_RecordFieldsSchema.Meta):
        openapi = {
            "minProperties": 1,
            "example": {"category": "restaurants", "description": "Dinner with Sam"},
        }

    # The stored amount is not re-read in another currency: a new currency comes with its amount.
    currency = CurrencyCode(
        metadata={"description": "ISO 4217 code. A new currency needs `amount` (in that currency) too."}
    )

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("Send at least one field to change.", "_schema")


class _ValidItemLoader:
    """``schema.load(item)`` for an item that is valid, without the per-item bookkeeping
    that lets marshmallow report every error (half of its time on a 1 000-record batch).

    It runs the schema's own rules (its pre_load and schema validators, each field's
    ``_deserialize`` and validators) and refuses what plain ``load`` would refuse for
    reasons outside them (unknown keys, not an object): on any doubt it answers ``None``,
    and the caller loads the items with marshmallow, so every error message and field
    path comes from marshmallow alone. Schemas with hooks it does not model are refused
    when it is built, not silently misread.
    """

    def __init__(self, schema: ma.Schema) -> None:
        hooks = schema._hooks
        if (
            hooks[POST_LOAD]
            or hooks[VALIDATES]
            or any(
                many or options.get("pass_original")
                for tag in (PRE_LOAD, VALIDATES_SCHEMA)
                for _, many, options in hooks[tag]
            )
        ):
            raise TypeError(f"{type(schema).__name__} uses hooks _ValidItemLoader does not model")
        if schema.unknown != ma.RAISE or schema.partial or schema.only or schema.exclude:
            raise TypeError(f"{type(schema).__name__}: only strict, whole schemas are supported")
        self._pre_load = [getattr(schema, name) for name, _, _ in hooks[PRE_LOAD]]
        self._validators = [getattr(schema, name) for name, _, _ in hooks[VALIDATES_SCHEMA]]
        fields = schema.load_fields
        if any(f.load_default is not ma.missing or f.pre_load or f.post_load for f in fields.values()):
            raise TypeError(f"{type(schema).__name__}: field defaults and field hooks are not modelled")
        self._fields = [
            (field.data_key or name, field.attribute or name, field, tuple(field.validators))
            for name, field in fields.items()
        ]
        self._known = frozenset(key for key, _, _, _ in self._fields)

    def load(self, item: Any) -> dict[str, Any] | None:
        if not isinstance(item, dict):
            return None
        try:
            for hook in self._pre_load:
                item = hook(item, many=False, partial=None, unknown=ma.RAISE)
            if not self._known.issuperset(item):
                return None
            loaded: dict[str, Any] = {}
            # Field.deserialize for fields without defaults or field hooks (checked above).
            for key, attribute, field, validators in self._fields:
                value = item.get(key, ma.missing)
                if value is ma.missing:
                    if field.required:
                        return None
                    continue
                if value is not None:
                    value = field._deserialize(value, key, item)
                    if any(validator(value) is False for validator in validators):
                        return None
                elif not field.allow_none:
                    return None
                loaded[attribute] = value
            for validator in self._validators:
                validator(loaded, many=False, partial=None, unknown=ma.RAISE)
        except ma.ValidationError:
            return None
        return loaded


class _BatchItems(ma.fields.List):
    """A list of nested objects loaded fast when all of them are valid (see
    ``_ValidItemLoader``); otherwise exactly as ``List(Nested(...))`` loads them."""

    def __init__(self, schema: type[ma.Schema], **kwargs: Any) -> None:
        super().__init__(ma.fields.Nested(schema), **kwargs)
        self._fast = _ValidItemLoader(schema())

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and len(value) <= MAX_BATCH:
            loaded = []
            for item in value:
                fast = self._fast.load(item)
                if fast is None:
                    break
                loaded.append(fast)
            else:
                return loaded
        return super()._deserialize(value, attr, data, **kwargs)


class RecordBatchSchema(StrictSchema):
    class Meta(StrictSchema.Meta):
        openapi = {"example": {"records": [RECORD_INPUT_EXAMPLE, SALARY_INPUT_EXAMPLE]}}

    records = _BatchItems(
        RecordCreateSchema,
        required=True,
        validate=ma.validate.Length(min=1, max=MAX_BATCH),
        metadata={"description": f"1–{MAX_BATCH} records, created all together or not at all."},
    )


class RecordListSchema(ma.Schema):
    class Meta:
        openapi = {
            "example": {"items": [_stored(42, RECORD_INPUT_EXAMPLE), _stored(43, SALARY_INPUT_EXAMPLE)]}
        }

    items = ma.fields.List(ma.fields.Nested(RecordSchema), required=True, metadata={"maxItems": MAX_BATCH})


class RecordFilterArgsSchema(StrictSchema):
    """Filters shared by ``GET /api/records`` and ``GET /api/stats``."""

    category = CleanText(
        validate=ma.validate.Length(min=1, max=64), metadata={"description": "Exact category."}
    )
    currency = CurrencyCode()
    from_ = RFC3339DateTime(data_key="from", metadata={"description": "occurred_at ≥ from (inclusive)."})
    to = RFC3339DateTime(metadata={"description": "occurred_at < to (exclusive)."})
    min_amount = DecimalString(metadata={"description": "amount ≥ min_amount (same currency units)."})
    max_amount = DecimalString(metadata={"description": "amount ≤ max_amount."})
    owner_id = Id(
        validate=ma.validate.Range(min=1, max=INT64_MAX),
        metadata={"description": "Analyst and admin only: one owner's records."},
    )

    @ma.validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}
        for name in ("min_amount", "max_amount"):
            if name in data:
                try:
                    parse_amount_filter(data[name])
                except MoneyError as error:
                    errors[name] = [str(error)]
        if errors:
            raise ma.ValidationError(errors)
        if "from_" in data and "to" in data and data["from_"] > data["to"]:
            raise ma.ValidationError("'from' must not be after 'to'.", "from")
        low, high = data.get("min_amount"), data.get("max_amount")
        if low is not None and high is not None and parse_amount_filter(low) > parse_amount_filter(high):
            raise ma.ValidationError("min_amount must not exceed max_amount.", "min_amount")

    @ma.post_load
    def _to_filters(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        filters = RecordFilters(
            category=data.pop("category", None),
            currency=data.pop("currency", None),
            occurred_from=data.pop("from_", None),
            occurred_to=data.pop("to", None),
            min_amount=_scaled(data.pop("min_amount", None)),
            max_amount=_scaled(data.pop("max_amount", None)),
            owner_id=data.pop("owner_id", None),
        )
        return {**data, "filters": filters}


def _scaled(text: str | None) -> int | None:
    return None if text is None else parse_amount_filter(text)


class RecordQueryArgsSchema(RecordFilterArgsSchema, PageArgsSchema):
    """Filters and paging for ``GET /api/records``."""


class StatsQueryArgsSchema(RecordFilterArgsSchema):
    group_by = ma.fields.String(
        validate=ma.validate.OneOf(GROUP_BY),
        metadata={"description": "Add per-group totals: category, day or month (UTC)."},
    )


RecordPageSchema = page_schema(RecordSchema, "RecordPageSchema")


class CurrencyTotalsSchema(ma.Schema):
    count = Count(required=True)
    # Many amounts below 10^13 add up to more: up to 2^63 records, so 32 integer digits.
    sum = DecimalString(required=True, integer_digits=32)
    avg = DecimalString(required=True, metadata={"description": "Rounded half-even to minor units."})
    min = DecimalString(required=True)
    max = DecimalString(required=True)


class StatsGroupSchema(ma.Schema):
    key = Text(64, required=True, metadata={"description": "Category, YYYY-MM-DD or YYYY-MM."})
    record_count = Count(required=True)
    totals = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(CurrencyTotalsSchema), required=True
    )


class StatsSchema(ma.Schema):
    """Totals per currency, never summed across currencies."""

    class Meta:
        openapi = {
            "example": {
                "totals": {"EUR": _totals(2, "-56.50", "-28.25", "-44.00", "-12.50")},
                "groups": [
                    {
                        "key": "groceries",
                        "record_count": 2,
                        "totals": {"EUR": _totals(2, "-56.50", "-28.25", "-44.00", "-12.50")},
                    }
                ],
                "record_count": 2,
                "generated_at": "2026-03-14T09:30:00Z",
            }
        }

    totals = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Nested(CurrencyTotalsSchema),
        required=True,
        metadata={"description": "ISO 4217 code → totals in that currency."},
    )
    groups = ma.fields.List(
        ma.fields.Nested(StatsGroupSchema),
        metadata={
            "description": f"Present when `group_by` is given; at most {MAX_GROUP_ROWS} (group, currency) totals.",
            "maxItems": MAX_GROUP_ROWS,
        },
    )
    record_count = Count(required=True)
    generated_at = RFC3339DateTime(required=True)
