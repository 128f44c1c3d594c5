"""The table format of `aimeter spend`: money to 6 places, and no "-0.000000" for a rounding remainder."""

from __future__ import annotations

import json
from decimal import Decimal

from aimeter.report import render


def _cells(value: str) -> str:
    return render(["key", "cost_usd"], [["idle", Decimal(value)]]).splitlines()[-1].split()[-1]


def test_a_negative_sub_display_remainder_shows_as_zero() -> None:
    # What the idle GPU row carries when an hour was used beyond capacity: rows add up exactly to the hour.
    assert _cells("-0.000000000002") == "0.000000"
    assert _cells("-0.0000004") == "0.000000"


def test_negative_amounts_that_show_keep_their_sign() -> None:
    assert _cells("-0.0000006") == "-0.000001"
    assert _cells("-1.5") == "-1.500000"
    assert _cells("2.25") == "2.250000"


def test_csv_and_json_keep_the_exact_value() -> None:
    exact = Decimal("-0.000000000002")
    assert Decimal(render(["cost_usd"], [[exact]], "csv").splitlines()[1]) == exact
    assert Decimal(json.loads(render(["cost_usd"], [[exact]], "json"))[0]["cost_usd"]) == exact
