"""Statistics per currency, aggregated in SQL on PostgreSQL and SQLite alike.

The database returns count, sum, min and max per currency (and per group) as exact
integers of minor units; Python only formats them and derives the half-even average from
the exact sum and count. Rows are never loaded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import String

from ..clock import format_utc, utcnow
from ..models import Record
from ..money import format_average, format_minor
from ..problems import InvalidInput
from .records import RecordFilters, apply_filters

# A response stays bounded: day groups over decades (times currencies) would otherwise
# grow without limit. Counted in (group, currency) totals, the unit of size.
MAX_GROUP_ROWS = 10_000


# Groups by day or month hash on a date value, not on its text: PostgreSQL then aggregates
# ~days x currencies groups in memory instead of sorting every row by a string (on disk,
# at 1 M rows). The planner only knows how few groups that is from the extended statistics
# on exactly these expressions (migration 0003), so the SQL below must stay byte-identical
# to theirs: 'UTC' is a literal, never a bound parameter, or the expressions differ.
PG_UTC_DAY = "CAST({} AT TIME ZONE 'UTC' AS DATE)"
PG_UTC_MONTH = "date_trunc('month', {} AT TIME ZONE 'UTC')"


class utc_day(FunctionElement[Any]):  # noqa: N801 (SQL function naming)
    """The UTC calendar day of a timestamp (PostgreSQL: a date; SQLite: ``YYYY-MM-DD``)."""

    inherit_cache = True


class utc_month(FunctionElement[Any]):  # noqa: N801
    """The UTC month of a timestamp (PostgreSQL: its first instant; SQLite: ``YYYY-MM``)."""

    inherit_cache = True


class period_key(FunctionElement[str]):  # noqa: N801
    """The ``YYYY-MM-DD`` / ``YYYY-MM`` text of a ``utc_day`` / ``utc_month`` group.

    Selected next to a GROUP BY on the period itself, PostgreSQL formats once per group,
    after aggregation.
    """

    type = String()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _pg_day(element: utc_day, compiler: Any, **kw: Any) -> str:
    return PG_UTC_DAY.format(compiler.process(element.clauses, **kw))


@compiles(utc_month, "postgresql")
def _pg_month(element: utc_month, compiler: Any, **kw: Any) -> str:
    return PG_UTC_MONTH.format(compiler.process(element.clauses, **kw))


@compiles(period_key, "postgresql")
def _pg_period_key(element: period_key, compiler: Any, **kw: Any) -> str:
    (period,) = element.clauses
    # A date would be cast to timestamptz (in the session's zone) by to_char; say timestamp.
    pattern = "'YYYY-MM-DD'" if isinstance(period, utc_day) else "'YYYY-MM'"
    return f"to_char(CAST({compiler.process(period, **kw)} AS TIMESTAMP), {pattern})"


@compiles(utc_day, "sqlite")
def _sqlite_day(element: utc_day, compiler: Any, **kw: Any) -> str:
    # SQLite holds the UTC value as text (see db.UTCDateTime): the key is the group itself.
    return f"strftime('%Y-%m-%d', {compiler.process(element.clauses, **kw)})"


@compiles(utc_month, "sqlite")
def _sqlite_month(element: utc_month, compiler: Any, **kw: Any) -> str:
    return f"strftime('%Y-%m', {compiler.process(element.clauses, **kw)})"


@compiles(period_key, "sqlite")
def _sqlite_period_key(element: period_key, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


def _grouping(group_by: str) -> tuple[ColumnElement[Any], ColumnElement[str]]:
    """What to group (and order) by, and the group's key as selected."""
    if group_by == "category":
        return Record.category.expression, Record.category.expression
    period = utc_day(Record.occurred_at) if group_by == "day" else utc_month(Record.occurred_at)
    return period, period_key(period)


def _totals(currency: str, count: int, total: int, low: int, high: int) -> dict[str, Any]:
    return {
        "count": count,
        "sum": format_minor(total, currency),
        "avg": format_average(total, count, currency),
        "min": format_minor(low, currency),
        "max": format_minor(high, currency),
    }


def _exact_sum(dialect: str) -> list[Any]:
    """SQL for an exact sum of ``amount_minor``, as one or two columns.

    PostgreSQL sums bigint into numeric (exact, no overflow). SQLite's sum() raises on
    int64 overflow, so there we add the high and low 32-bit halves separately (each sum
    stays far inside int64) and recombine them in Python: high * 2^32 + low is exact.
    """
    if dialect == "sqlite":
        return [func.sum(Record.amount_minor.op(">>")(32)), func.sum(Record.amount_minor.op("&")(0xFFFFFFFF))]
    return [func.sum(Record.amount_minor)]


def _query(dialect: str, group_by: str | None, filters: RecordFilters, owner_id: int | None) -> Select[Any]:
    """One row per (group, currency), or per currency: [key,] currency, count, min, max, sum(s)."""
    grouped_on, key = _grouping(group_by) if group_by else (None, None)
    columns: list[Any] = [
        *([key.label("group_key")] if key is not None else []),
        Record.currency,
        func.count(),
        func.min(Record.amount_minor),
        func.max(Record.amount_minor),
        *_exact_sum(dialect),
    ]
    grouping = [grouped_on, Record.currency] if grouped_on is not None else [Record.currency]
    return apply_filters(select(*columns), filters, owner_id).group_by(*grouping).order_by(*grouping)


def compute(
    session: Session, *, owner_id: int | None, filters: RecordFilters, group_by: str | None
) -> dict[str, Any]:
    """The ``GET /api/stats`` body (JSON-ready).

    With ``group_by``, one query aggregates per (group, currency) and the per-currency
    totals are combined from those exact partial aggregates (sums add, min of mins...).
    """
    query = _query(session.get_bind().dialect.name, group_by, filters, owner_id)
    offset = 1 if group_by is not None else 0
    per_currency: dict[str, list[int]] = {}
    groups: dict[str, dict[str, Any]] = {}
    rows = 0
    for row in session.execute(query):
        currency, count, low, high, *parts = row[offset:]
        # PostgreSQL's one sum is numeric (a Decimal); SQLite's two halves are ints.
        total = int(parts[0]) if len(parts) == 1 else (parts[0] << 32) + parts[1]
        acc = per_currency.setdefault(currency, [0, 0, low, high])
        acc[0] += count
        acc[1] += total
        acc[2] = min(acc[2], low)
        acc[3] = max(acc[3], high)
        if offset:
            rows += 1
            if rows > MAX_GROUP_ROWS:
                raise InvalidInput(
                    "group_by",
                    f"More than {MAX_GROUP_ROWS} group totals; narrow the filters "
                    "(from, to, category, currency, owner_id).",
                )
            entry = groups.setdefault(row[0], {"key": row[0], "record_count": 0, "totals": {}})
            entry["totals"][currency] = _totals(currency, count, total, low, high)
            entry["record_count"] += count

    body: dict[str, Any] = {
        "totals": {cur: _totals(cur, *acc) for cur, acc in sorted(per_currency.items())},
        "record_count": sum(acc[0] for acc in per_currency.values()),
    }
    if group_by is not None:
        body["groups"] = list(groups.values())
    body["generated_at"] = format_utc(utcnow())
    return body
