"""``statsapi.money``: exact decimal strings ↔ integer minor units, half-even averages.

Expected values are derived independently with ``decimal.Decimal`` where arithmetic is
involved; literal expectations are spelled out by hand from the ISO 4217 minor units.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statsapi.money import (
    ISO_4217,
    MoneyError,
    amount_bound,
    divide_half_even,
    format_average,
    format_minor,
    minor_units,
    parse_amount,
)


# -- the table -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("currency", "digits"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("CLF", 4), ("UYW", 4)],
)
def test_minor_units_follow_iso_4217(currency: str, digits: int) -> None:
    assert minor_units(currency) == digits


def test_table_holds_only_upper_case_alpha_codes_with_known_minor_units() -> None:
    assert len(ISO_4217) > 150
    for code, digits in ISO_4217.items():
        assert len(code) == 3
        assert code.isascii()
        assert code.isalpha()
        assert code.isupper()
        assert digits in {0, 2, 3, 4}
    # Codes without minor units (precious metals, SDR, testing) are not money here.
    for code in ("XAU", "XAG", "XDR", "XTS", "XXX"):
        assert code not in ISO_4217


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", "ZZZ", "", "XAU"])
def test_unknown_currency_is_a_money_error(currency: str) -> None:
    with pytest.raises(MoneyError, match="unknown ISO 4217"):
        minor_units(currency)
    with pytest.raises(MoneyError):
        parse_amount("1", currency)
    with pytest.raises(MoneyError):
        format_minor(1, currency)


# -- parse ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        # 2 decimals
        ("0", "USD", 0),
        ("12.5", "USD", 1250),
        ("12.50", "USD", 1250),
        ("-12.50", "USD", -1250),
        ("0.01", "USD", 1),
        ("-0.01", "USD", -1),
        ("100", "USD", 10000),
        # 0 decimals
        ("0", "JPY", 0),
        ("1500", "JPY", 1500),
        ("-7", "JPY", -7),
        # 3 decimals
        ("1.234", "BHD", 1234),
        ("1.2", "BHD", 1200),
        ("-0.001", "BHD", -1),
        # 4 decimals
        ("1.2345", "CLF", 12345),
        ("0.0001", "CLF", 1),
        ("-3", "CLF", -30000),
    ],
)
def test_parse_amount(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor
    # Independent check: the Decimal value scaled by the minor units.
    assert Decimal(text).scaleb(minor_units(currency)) == minor


@pytest.mark.parametrize("text", ["-0", "-0.0", "-0.00"])
def test_negative_zero_parses_to_zero(text: str) -> None:
    assert parse_amount(text, "USD") == 0
    assert format_minor(parse_amount(text, "USD"), "USD") == "0.00"


def test_jpy_negative_zero_formats_without_sign() -> None:
    assert parse_amount("-0", "JPY") == 0
    assert format_minor(0, "JPY") == "0"


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("9999999999999.99", "USD"),
        ("-9999999999999.99", "USD"),
        ("9999999999999", "JPY"),
        ("9999999999999.999", "BHD"),
        ("-9999999999999.9999", "CLF"),
    ],
)
def test_largest_amounts_below_ten_to_the_thirteen_are_accepted(text: str, currency: str) -> None:
    minor = parse_amount(text, currency)
    assert abs(minor) == amount_bound(currency) - 1
    assert format_minor(minor, currency) == text


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("10000000000000", "USD"),
        ("-10000000000000", "USD"),
        ("10000000000000.00", "USD"),
        ("10000000000000", "JPY"),
        ("99999999999999", "CLF"),
    ],
)
def test_amounts_at_or_above_ten_to_the_thirteen_are_rejected(text: str, currency: str) -> None:
    assert abs(Decimal(text)) >= Decimal(10) ** 13
    with pytest.raises(MoneyError, match="fewer than 14 integer digits"):
        parse_amount(text, currency)


def test_amount_bound_is_ten_to_the_thirteen_major_units() -> None:
    assert amount_bound("USD") == 10**15
    assert amount_bound("JPY") == 10**13
    assert amount_bound("BHD") == 10**16
    assert amount_bound("CLF") == 10**17


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "1E3",
        "1.5e2",
        "NaN",
        "nan",
        "-NaN",
        "Infinity",
        "-Infinity",
        "inf",
        "+1",
        "01",
        "-01",
        "00.5",
        ".5",
        "-.5",
        "1.",
        "-",
        "",
        " 1",
        "1 ",
        "1\n",
        "1,50",
        "1_000",
        "0x10",
        "−1",  # U+2212 MINUS SIGN
        "１",  # FULLWIDTH DIGIT ONE
        "٣",  # ARABIC-INDIC DIGIT THREE
        "--1",
        "1.2.3",
    ],
)
def test_rejects_everything_that_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_amount(text, "USD")


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1.234", "USD"),
        ("0.001", "EUR"),
        ("1.5", "JPY"),
        ("1.0", "JPY"),
        ("1.2345", "BHD"),
        ("1.23456", "CLF"),
    ],
)
def test_rejects_more_decimals_than_the_currency_has(text: str, currency: str) -> None:
    with pytest.raises(MoneyError, match=f"{currency} amounts have at most {minor_units(currency)} decimal"):
        parse_amount(text, currency)


def test_money_error_is_a_value_error_for_callers() -> None:
    assert issubclass(MoneyError, ValueError)


# -- format --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (0, "USD", "0.00"),
        (1, "USD", "0.01"),
        (-1, "USD", "-0.01"),
        (-1250, "USD", "-12.50"),
        (100000, "USD", "1000.00"),
        (0, "JPY", "0"),
        (-1500, "JPY", "-1500"),
        (1, "BHD", "0.001"),
        (-1234, "BHD", "-1.234"),
        (1, "CLF", "0.0001"),
        (12345, "CLF", "1.2345"),
        (-30000, "CLF", "-3.0000"),
    ],
)
def test_format_minor(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text


def test_format_handles_sums_beyond_the_per_record_bound() -> None:
    # Sums of many records exceed 10^13; formatting stays exact (no float, no Decimal context).
    total = 1000 * (amount_bound("USD") - 1)
    assert format_minor(total, "USD") == str(Decimal(total).scaleb(-2))


# -- averages ------------------------------------------------------------------------
def _decimal_average(amounts: list[str], currency: str) -> str:
    """Independent reference: the mean in Decimal, quantized half-even to minor units."""
    digits = minor_units(currency)
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        mean = sum(Decimal(a) for a in amounts) / len(amounts)
        quantum = Decimal(1).scaleb(-digits)
        value = mean.quantize(quantum, rounding=ROUND_HALF_EVEN)
    if value == 0:
        value = abs(value)  # no "-0.00"
    return f"{value:f}"


@pytest.mark.parametrize(
    ("amounts", "currency", "expected"),
    [
        (["0.01", "0.02", "0.02"], "USD", "0.02"),  # 0.01666… → 0.02
        (["0.01", "0.02"], "USD", "0.02"),  # exact tie 0.015 → even 0.02
        (["0.01", "0.00"], "USD", "0.00"),  # exact tie 0.005 → even 0.00
        (["0.03", "0.00"], "USD", "0.02"),  # exact tie 0.015 → even 0.02
        (["0.05", "0.00"], "USD", "0.02"),  # exact tie 0.025 → even 0.02
        (["0.07", "0.00"], "USD", "0.04"),  # exact tie 0.035 → even 0.04
        (["-0.01", "0.00"], "USD", "0.00"),  # -0.005 → -0.00 → "0.00"
        (["-0.03", "0.00"], "USD", "-0.02"),  # -0.015 → -0.02
        (["-0.05", "0.00"], "USD", "-0.02"),  # -0.025 → -0.02
        (["-0.01", "-0.02", "-0.02"], "USD", "-0.02"),
        (["1", "2"], "JPY", "2"),  # 1.5 → 2
        (["1", "4"], "JPY", "2"),  # 2.5 → 2
        (["-1", "-4"], "JPY", "-2"),  # -2.5 → -2
        (["0.001", "0.002"], "BHD", "0.002"),  # 0.0015 → 0.002
        (["0.0001", "0.0002"], "CLF", "0.0002"),
        (["10", "-10", "0.01"], "USD", "0.00"),  # 0.00333…
    ],
)
def test_format_average_is_half_even(amounts: list[str], currency: str, expected: str) -> None:
    minors = [parse_amount(a, currency) for a in amounts]
    assert _decimal_average(amounts, currency) == expected  # the reference agrees with the hand value
    assert format_average(sum(minors), len(minors), currency) == expected


@pytest.mark.parametrize(
    ("numerator", "denominator", "quotient"),
    [(1, 2, 0), (3, 2, 2), (5, 2, 2), (7, 2, 4), (-1, 2, 0), (-3, 2, -2), (-5, 2, -2), (5, 3, 2), (-5, 3, -2),
     (4, 3, 1), (-4, 3, -1), (0, 7, 0), (10, 5, 2), (-10, 5, -2)],
)  # fmt: skip
def test_divide_half_even_small_cases(numerator: int, denominator: int, quotient: int) -> None:
    assert divide_half_even(numerator, denominator) == quotient


@pytest.mark.parametrize("denominator", [0, -1])
def test_divide_half_even_needs_a_positive_denominator(denominator: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        divide_half_even(1, denominator)


# -- properties ----------------------------------------------------------------------
CURRENCIES = st.sampled_from(["USD", "JPY", "BHD", "CLF", "EUR", "KWD", "KRW"])


@st.composite
def valid_amounts(draw: st.DrawFn) -> tuple[str, str]:
    """A currency and a canonical amount string for it (any allowed number of decimals)."""
    currency = draw(CURRENCIES)
    digits = minor_units(currency)
    whole = draw(st.integers(min_value=0, max_value=10**13 - 1))
    places = draw(st.integers(min_value=0, max_value=digits))
    fraction = draw(st.text(alphabet="0123456789", min_size=places, max_size=places))
    negative = draw(st.booleans())
    text = ("-" if negative else "") + str(whole) + (f".{fraction}" if places else "")
    return text, currency


@settings(max_examples=300, deadline=None)
@given(valid_amounts())
def test_format_parse_round_trips(example: tuple[str, str]) -> None:
    text, currency = example
    digits = minor_units(currency)
    minor = parse_amount(text, currency)
    formatted = format_minor(minor, currency)
    # Same value (Decimal compares exactly), written with exactly the currency's decimals.
    assert Decimal(formatted) == Decimal(text)
    assert ("." in formatted) is (digits > 0)
    assert len(formatted.partition(".")[2]) == digits
    if minor == 0:
        assert not formatted.startswith("-")
    # And the canonical form is a fixed point.
    assert format_minor(parse_amount(formatted, currency), currency) == formatted
    assert abs(minor) < amount_bound(currency)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=1, max_value=10**25),
)
def test_divide_half_even_matches_decimal_quantize(numerator: int, denominator: int) -> None:
    with decimal.localcontext() as ctx:
        # Enough precision that the quotient is exact to well past the rounding digit.
        ctx.prec = len(str(abs(numerator))) + len(str(denominator)) + 20
        expected = (Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    assert divide_half_even(numerator, denominator) == int(expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=1, max_value=10**6))
def test_exact_ties_round_to_even(half_units: int, denominator: int) -> None:
    # numerator / (2 * denominator) with an odd numerator multiple is always an exact .5 tie.
    numerator = (2 * half_units + 1) * denominator
    result = divide_half_even(numerator, 2 * denominator)
    assert result % 2 == 0
    # Exactly half a unit away from the true quotient (checked in integers: no rounding).
    assert abs(2 * result * denominator - numerator) == denominator
