"""Money as exact decimal strings and integer minor units; never a float.

The ISO 4217 table maps each alphabetic code to its minor units (USD 2, JPY 0, BHD 3,
CLF 4). Amounts travel as JSON strings such as ``"-12.50"``, are stored as integer minor
units, and aggregate in SQL as integers. Codes without minor units (gold, SDR, test
codes) are not money for this API and are not listed.
"""

from __future__ import annotations

import re

# ISO 4217 List One (2026), plus codes withdrawn since 2023 that historical transactions
# may still carry (ANG, BGN, HRK, SLL, ZWL). Value: number of minor units.
ISO_4217: dict[str, int] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2,
    "AWG": 2, "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0,
    "BMD": 2, "BND": 2, "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2,
    "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4,
    "CLP": 0, "CNY": 2, "COP": 2, "COU": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2,
    "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2,
    "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0,
    "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HRK": 2, "HTG": 2, "HUF": 2, "IDR": 2,
    "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0,
    "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2,
    "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2,
    "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2,
    "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2,
    "PHP": 2, "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2,
    "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2,
    "SLE": 2, "SLL": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2,
    "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2,
    "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "USN": 2, "UYI": 0, "UYU": 2,
    "UYW": 4, "UZS": 2, "VED": 2, "VES": 2, "VND": 0, "VUV": 0, "WST": 2, "XAF": 0,
    "XCD": 2, "XCG": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
    "ZWL": 2,
}  # fmt: skip

MAX_INTEGER_DIGITS = 13  # |amount| < 10^13 in major units
_AMOUNT = re.compile(r"^(?P<sign>-)?(?P<int>0|[1-9][0-9]{0,12})(?:\.(?P<frac>[0-9]+))?$")


class MoneyError(ValueError):
    """An amount or currency the API must reject; the message is shown to the client."""


def minor_units(currency: str) -> int:
    try:
        return ISO_4217[currency]
    except KeyError:
        raise MoneyError(f"unknown ISO 4217 currency code {currency!r}") from None


def parse_amount(text: str, currency: str) -> int:
    """``"-12.50"`` in USD → ``-1250``. Rejects floats' spellings, exponents, NaN."""
    digits = minor_units(currency)
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise MoneyError(
            'amount must be a decimal string like "-12.50": digits, an optional leading '
            f"minus and point, fewer than {MAX_INTEGER_DIGITS + 1} integer digits, no exponent"
        )
    fraction = match["frac"] or ""
    if len(fraction) > digits:
        raise MoneyError(f"{currency} amounts have at most {digits} decimal places")
    value = int(match["int"]) * 10**digits + int(fraction.ljust(digits, "0") or 0)
    return -value if match["sign"] else value


def format_minor(value: int, currency: str) -> str:
    """``-1250`` in USD → ``"-12.50"``; JPY has no point."""
    digits = minor_units(currency)
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d}" if digits else f"{sign}{whole}"


def format_average(total: int, count: int, currency: str) -> str:
    """Mean of ``count`` amounts summing to ``total`` minor units, rounded half-even."""
    return format_minor(divide_half_even(total, count), currency)


def divide_half_even(numerator: int, denominator: int) -> int:
    """Exact integer division rounded half to even (no Decimal precision limits)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)  # 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def amount_bound(currency: str) -> int:
    """Exclusive bound on |minor units| for ``currency`` (10^13 major units)."""
    return 10 ** (MAX_INTEGER_DIGITS + minor_units(currency))
