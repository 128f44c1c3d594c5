"""The table format of `aimeter spend`: money to 6 places, and no "-0.000000" for a rounding remainder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aimeter.reports.chargeback import month_window
from aimeter.reports.format import amount, parse_when, render


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


def test_machine_formats_spell_zero_positionally_never_0e_minus_12() -> None:
    zero = Decimal("0E-12")
    assert render(["cost_usd"], [[zero]], "csv").splitlines()[1] == "0.000000000000"
    assert json.loads(render(["cost_usd"], [[zero]], "json"))[0]["cost_usd"] == "0.000000000000"


def test_csv_neutralises_formula_text_but_never_numbers() -> None:
    """OWASP's CSV injection rule: a text cell starting with = + - @ (or tab, CR) gets a leading '."""
    rows = [["=HYPERLINK(\"http://x\")", Decimal("-0.90"), -3], ["+1", Decimal("2"), 0], ["@SUM(A1)", None, 1],
            ["-team", Decimal("0"), 2], ["plain", Decimal("1.5"), 3]]
    lines = render(["team", "savings_usd", "n"], rows, "csv").splitlines()
    assert lines[2:] == ["'+1,2,0", "'@SUM(A1),,1", "'-team,0,2", "plain,1.5,3"]
    assert lines[1].startswith('"\'=HYPERLINK(')
    assert lines[1].endswith(",-0.90,-3")


def test_out_of_range_times_are_a_clear_error() -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    for text in ("10000000d", "99999999w", "1800-01-01", "2300-01-01"):
        with pytest.raises(ValueError, match="out of range"):
            parse_when(text, now)
    for month in ("9999-12", "0000-01", "1899-12"):
        with pytest.raises(ValueError, match="out of range"):
            month_window(month)
    assert parse_when("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)


def test_one_amount_formatter_for_tables_reprice_and_html() -> None:
    from aimeter.reports.chargeback_svg import usd as html_usd  # noqa: PLC0415
    from aimeter.reprice import usd as reprice_usd  # noqa: PLC0415

    remainder = Decimal("-0.000000000002")  # the idle row's rounding remainder: never a refund
    assert (amount(remainder), reprice_usd(remainder), html_usd(Decimal("-0.004"))) == ("0.000000", "$0.000000",
                                                                                       "$0.00")
    assert reprice_usd(Decimal("-1234.5")) == "-$1,234.500000"
    assert html_usd(Decimal("1234.565")) == "$1,234.57"  # half up, as on an invoice
    assert amount(Decimal("12345678901234567890123456.123456789012")) == "12345678901234567890123456.123457"
