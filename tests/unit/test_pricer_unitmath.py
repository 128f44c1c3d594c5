"""Integer units against the Decimal reference: the same 12-place result wherever the fast path computes one."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aimeter.pricer.rates import PER_MILLION, QUANTUM, money
from aimeter.pricer.unitmath import (
    InexactError,
    from_units,
    list_rate,
    round_half_even,
    safe_tokens,
    throughput_rate,
    units,
)

SECONDS_PER_HOUR = Decimal(3600)
# Prices as the config and overrides allow them: up to 12 places, up to 24 digits (overrides) or 20 (config).
PRICES = st.decimals(0, 10**6, places=12, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Decimal("0.15"), Decimal("2.5"), Decimal("0.075"), Decimal("1.123456789"), Decimal("0.000000000001"),
     Decimal("7.77"), Decimal("99999999.999999999999")])
THROUGHPUT = st.decimals(Decimal("0.000001"), 10**7, places=6, allow_nan=False, allow_infinity=False)


@given(st.integers(0, 10**40), st.integers(1, 10**20))
def test_round_half_even_is_exact_bankers_rounding(numerator, denominator):
    assert round_half_even(numerator, denominator) == round(Fraction(numerator, denominator))


@given(st.integers(0, 10**18), st.integers(1, 10**6).map(lambda k: 10 * k))
def test_ties_go_to_the_even_neighbour(quotient, denominator):
    assert round_half_even(quotient * denominator + denominator // 2, denominator) == quotient + (quotient & 1)


@given(PRICES, st.data())
def test_a_list_rate_charges_what_rates_apply_card_charges(rate, data):
    a, q, _ = list_rate(rate)
    count = data.draw(st.integers(0, max(0, safe_tokens([list_rate(rate)]) - 1)))
    assert round_half_even(count * a, q) == units(money(count * rate / PER_MILLION))


@given(PRICES.filter(bool), THROUGHPUT, st.data())
def test_a_throughput_rate_charges_what_gpu_by_throughput_charges(per_hour, per_second, data):
    """Decimal rounds the division to 28 digits before the 12 places: below the bound it changes nothing."""
    tokens_per_hour = per_second * SECONDS_PER_HOUR
    rate = throughput_rate(per_hour, tokens_per_hour)
    bound = safe_tokens([rate])
    count = data.draw(st.integers(0, max(0, bound - 1)) | st.integers(max(0, bound - 1000), max(0, bound - 1)))
    assert round_half_even(count * rate[0], rate[1]) == units(money(count * per_hour / tokens_per_hour))


def test_units_round_trip_and_refuse_finer_amounts():
    assert units(Decimal("0.00042")) == 420_000_000
    assert from_units(420_000_000) == Decimal("0.00042") == from_units(units(QUANTUM * 420_000_000))
    assert from_units(None) is None
    with pytest.raises(InexactError):
        units(Decimal("1E-13"))
    with pytest.raises(InexactError):
        list_rate(Decimal("-1"))
