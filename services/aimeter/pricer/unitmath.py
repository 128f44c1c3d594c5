"""Money as integer *units* of 1e-12 USD (a ClickHouse ``Decimal(38, 12)``'s raw value), and the proofs
that integer arithmetic gives exactly what the Decimal reference (:mod:`aimeter.pricer.rates`) gives. Pure.

Every class cost of the reference is ``money(count x rate / divisor)``: a Decimal product, a division,
and one half-even rounding to 12 places. With the per-token price as an exact fraction ``A / Q`` units,
the integer result is ``round_half_even(count x A / Q)``. It equals the reference when:

* list and overrides rates (``count x rate / 1M``): the product has at most 28 digits (Decimal's default
  precision), so the product is exact, the division by 1M only moves the point, and both sides round the
  same exact value once. Most list prices have at most 6 decimals: then ``Q == 1`` and there is no
  rounding at all, one multiplication per class;
* GPU throughput (``count x usd_per_hour / tokens_per_hour``): the product is exact as above, but the
  division is rounded to 28 significant digits before the rounding to 12 places (a double rounding).
  With ``N = count x A < 10**27`` that first rounding moves the value by less than ``1 / (2Q)``, the
  least distance from ``N / Q`` to any half-unit it is not on (and a value on a half-unit has at most
  28 digits, so it is kept exactly): the second rounding lands where a single one would.

:func:`safe_tokens` turns these conditions into one bound on an event's token counts; past it, the
caller sends the event to the reference path.
"""

from __future__ import annotations

from decimal import Decimal
from math import gcd

DECIMAL_DIGITS = 10**28  # Decimal's default context precision: 28 significant digits
SINGLE_ROUNDING = 10**27  # N below this: the 28-digit division rounding cannot change the 12-place result
CLASSES_PER_ROW = 11  # so that a row's total stays below the bounds too


class InexactError(ValueError):
    """An amount the integer path cannot give exactly (the reference path decides instead)."""


def units(value: Decimal) -> int:
    """A money Decimal (at most 12 places) as integer units."""
    scaled = value.scaleb(12)
    whole = int(scaled)
    if whole != scaled:
        raise InexactError(f"{value} has more than 12 decimal places")
    return whole


def from_units(amount: int | None) -> Decimal | None:
    """Units back to the Decimal the reference path would hold (equal in value, 12 places)."""
    return None if amount is None else Decimal(amount).scaleb(-12)


def _parts(value: Decimal) -> tuple[int, int]:
    """``value`` as (coefficient, exponent); only finite, non-negative prices are taken."""
    sign, digits, exponent = value.as_tuple()
    if sign or not isinstance(exponent, int):
        raise InexactError(f"price {value} is negative or not finite")
    return int("".join(map(str, digits)) or "0"), exponent


def _fraction(numerator: int, denominator: int) -> tuple[int, int]:
    common = gcd(numerator, denominator) or 1
    return numerator // common, denominator // common


def list_rate(per_million: Decimal) -> tuple[int, int, int]:
    """A list/overrides rate (USD per 1M tokens) as (A, Q, coefficient): units per token ``A / Q``."""
    coefficient, exponent = _parts(per_million)
    power = exponent + 6  # x 1e12 units per USD, / 1e6 tokens
    if power >= 0:
        return coefficient * 10**power, 1, coefficient
    return (*_fraction(coefficient, 10**-power), coefficient)


def throughput_rate(usd_per_hour: Decimal, tokens_per_hour: Decimal) -> tuple[int, int, int]:
    """A GPU period's throughput price as (A, Q, coefficient of usd_per_hour): ``n x A / Q`` units."""
    hour_coefficient, hour_exponent = _parts(usd_per_hour)
    tokens_coefficient, tokens_exponent = _parts(tokens_per_hour)
    if tokens_coefficient == 0:
        raise InexactError("a GPU period sustains no tokens")
    power = hour_exponent + 12 - tokens_exponent
    numerator, denominator = hour_coefficient, tokens_coefficient
    if power >= 0:
        numerator *= 10**power
    else:
        denominator *= 10**-power
    return (*_fraction(numerator, denominator), hour_coefficient)


def safe_tokens(rates: list[tuple[int, int, int]]) -> int:
    """A token count below which every class of these rates is exact (see the module docstring)."""
    largest = max((max(a, c) for a, _, c in rates), default=1) or 1
    return min(DECIMAL_DIGITS, SINGLE_ROUNDING) // (largest * CLASSES_PER_ROW)


def round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (both non-negative) rounded half-even, as Decimal's quantize does."""
    if denominator == 1:
        return numerator
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient
