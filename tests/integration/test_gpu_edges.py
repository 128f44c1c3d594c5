"""gpu_cost_allocation_edges (0016_gpu_allocation_edges.sql) is gpu_cost_allocation over a window's head and tail,
row for row, and every Grafana spend panel plans it once instead of the allocation twice."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from aimeter.reports import panels
from aimeter.reports.sql import Grouping, aggregate_query, bound_window, chargeback_query
from tests.integration.test_clean_first import ledger
from tests.integration.test_rollup_exact import BASE, Ledger

pytestmark = pytest.mark.integration
__all__ = ["ledger"]  # the fixture, imported for the tests below

COLUMNS = ("backend, hour, team, project, user, model, provider, deployment, tokens, hour_cost_usd, capacity_tokens, "
           "used_tokens, cost_usd")


def _at(moment: datetime) -> str:
    return f"toDateTime64('{moment:%Y-%m-%d %H:%M:%S.%f}', 6, 'UTC')"


@pytest.mark.parametrize(("since", "head_end", "tail_from", "until"), [
    (BASE + timedelta(minutes=17), BASE + timedelta(hours=1), BASE + timedelta(hours=2), BASE + timedelta(hours=5)),
    (BASE + timedelta(minutes=17), BASE + timedelta(hours=1), BASE + timedelta(hours=5), BASE + timedelta(hours=5)),
    (BASE + timedelta(minutes=17), BASE + timedelta(minutes=40), BASE + timedelta(minutes=40),
     BASE + timedelta(minutes=40)),
    (BASE + timedelta(hours=1, minutes=5), BASE + timedelta(hours=2), BASE + timedelta(hours=3, minutes=20),
     BASE + timedelta(hours=3, minutes=50)),
])
def test_edges_equal_the_allocation_over_head_and_tail(ledger: Ledger, since: datetime, head_end: datetime,
                                                       tail_from: datetime, until: datetime) -> None:
    def rows(sql: str) -> list[tuple[object, ...]]:
        return sorted(ledger.client.query(sql).result_rows, key=repr)

    a, h, t, u = (_at(m) for m in (since, head_end, tail_from, until))
    two = rows(f"SELECT {COLUMNS} FROM gpu_cost_allocation(since = {a}, until = {h}) UNION ALL "
               f"SELECT {COLUMNS} FROM gpu_cost_allocation(since = {t}, until = {u})")
    assert rows(f"SELECT {COLUMNS} FROM gpu_cost_allocation_edges(since = {a}, head_end = {h}, tail_from = {t}, "
                f"until = {u})") == two
    assert two  # the period [0 h, 4 h) has segments in every case


def test_a_grafana_panel_plans_one_gpu_view_and_the_cli_month_one_or_none() -> None:
    for sql in (panels.chargeback_table(), panels.chargeback_total(), panels.idle_capacity(),
                panels.spend_over_time("team"), panels.deployment_split()):
        assert sql.count("gpu_cost_allocation_edges(") == 1, sql[:200]
        assert sql.count("gpu_cost_allocation(") == 0, sql[:200]
    month = bound_window(BASE.replace(day=1), BASE.replace(day=1) + timedelta(days=30))
    lines = chargeback_query("team", month)[0]
    assert (lines.count("gpu_cost_allocation("), lines.count("gpu_cost_allocation_edges(")) == (1, 0)
    spend = aggregate_query(["cost_usd"], bound_window(BASE + timedelta(minutes=5), BASE + timedelta(hours=3)),
                            grouping=Grouping(key="team"))[0]
    assert spend.count("gpu_cost_allocation_edges(") == 1
