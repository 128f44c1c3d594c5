"""Re-rating against the real ClickHouse engine: new versions, totals that never double, corrections per team.

Each test seeds its own month, priced as the pricer would at ingest (no overrides). The new price
book adds a negotiated 20% off gpt-4o from the 15th and a price for a model nobody knew. Hand-computed:
gpt-4o is $2.50 / $10 per 1M, so 1M in + 100k out is $3.50 list and $2.80 discounted; gpt-4o-mini
1M in + 1M out is $0.75; acme-x at $1 / $2 per 1M, 1k in + 1k out, is $0.003.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from aimeter.config import parse_config
from aimeter.events import UsageEvent
from aimeter.local.kafka import free_port
from aimeter.pricer.overrides_load import parse_overrides
from aimeter.pricer.pricebook import PriceBook
from aimeter.reports.sql import spend_query
from aimeter.reprice import Progress, reprice
from aimeter.store.query_server import serve_queries
from tests.integration.chdb_fixture import ingest

pytestmark = pytest.mark.integration
CONFIG_TEXT = """
backends:
  openai-rr: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  acme-rr: {kind: openai_compatible, base_url: "https://acme.example/v1", deployment: proprietary, provider: acme}
models:
  gpt-4o: {backend: openai-rr}
  gpt-4o-mini: {backend: openai-rr}
  acme-x: {backend: acme-rr}
"""
CONFIG = parse_config(CONFIG_TEXT)
AS_CHARGED = PriceBook(CONFIG)
OVERRIDES = """\
version: corrected
prices:
  - {{provider: acme, model: acme-x, input: 1, output: 2}}
discounts:
  - {{provider: openai, model: gpt-4o, percent: 20, effective_from: {mid}}}
"""


def month(year: int, number: int) -> tuple[datetime, datetime]:
    start = datetime(year, number, 1, tzinfo=UTC)
    return start, (start + timedelta(days=32)).replace(day=1)


def corrected_book(start: datetime) -> PriceBook:
    return PriceBook(CONFIG, parse_overrides(OVERRIDES.format(mid=(start + timedelta(days=14)).date())))


def call(team: str, model: str, at: datetime, inp: int, out: int) -> UsageEvent:
    provider, backend = ("acme", "acme-rr") if model.startswith("acme") else ("openai", "openai-rr")
    return UsageEvent(event_id=uuid.uuid4(), started_at=at, ended_at=at, api="openai.chat", backend=backend,
                      provider=provider, deployment="proprietary", model_requested=model, status="ok",
                      http_status=200, usage_source="reported", usage={"input_tokens": inp, "output_tokens": out},
                      attribution={"team": team})


def seed(client: Client, start: datetime) -> list[UsageEvent]:
    events = [
        call("search", "gpt-4o", start + timedelta(days=9), 1_000_000, 100_000),  # before the discount
        call("search", "gpt-4o", start + timedelta(days=19), 1_000_000, 100_000),  # after: $3.50 -> $2.80
        call("ads", "gpt-4o-mini", start + timedelta(days=19), 1_000_000, 1_000_000),  # no discount: $0.75
        call("ads", "acme-x", start + timedelta(days=20), 1000, 1000),  # unpriced -> $0.003
        call("search", "gpt-4o", start - timedelta(days=400), 1_000_000, 100_000),  # outside every test period
    ]
    ingest(client, events, AS_CHARGED)
    return events


def scalar(client: Client, sql: str, **params: object) -> object:
    return client.query(sql, parameters=params).result_rows[0][0]


def final_total(client: Client, start: datetime, end: datetime) -> Decimal:
    return scalar(client, "SELECT sum(cost_usd) FROM usage_costs FINAL WHERE started_at >= {s:DateTime64(3, 'UTC')}"
                  " AND started_at < {e:DateTime64(3, 'UTC')}", s=start, e=end)


def raw_rows(client: Client) -> int:
    return int(client.command("SELECT count() FROM usage_costs"))


def test_dry_run_reports_the_change_and_writes_nothing(metering_store):
    start, end = month(2025, 4)
    seed(metering_store, start)
    rows, runs = raw_rows(metering_store), int(metering_store.command("SELECT count() FROM rating_runs"))
    report = reprice(metering_store, corrected_book(start), start, end, dry_run=True)
    t = report.plan.totals
    assert (t.events, t.changed, t.unpriced_before, t.unpriced_after) == (4, 2, 1, 0)
    assert (t.before, t.after) == (Decimal("7.75"), Decimal("7.053"))
    assert report.written == 0
    assert raw_rows(metering_store) == rows
    assert int(metering_store.command("SELECT count() FROM rating_runs")) == runs
    assert final_total(metering_store, start, end) == Decimal("7.75")


def test_reprice_writes_new_versions_and_totals_never_double(metering_store):
    start, end = month(2025, 5)
    events = seed(metering_store, start)
    seen: list[Progress] = []
    report = reprice(metering_store, corrected_book(start), start, end, dry_run=False, page_size=3,
                     progress=seen.append)
    assert [(p.done, p.total) for p in seen] == [(3, 4), (4, 4)]
    assert report.written == 2
    assert final_total(metering_store, start, end) == Decimal("7.053")  # the after total, not before + after
    assert scalar(metering_store, "SELECT count() FROM usage_costs FINAL WHERE started_at >= {s:DateTime64(3, 'UTC')}"
                  " AND started_at < {e:DateTime64(3, 'UTC')}", s=start, e=end) == 4
    versions = dict(metering_store.query(
        "SELECT event_id, max(rating_version) FROM usage_costs FINAL WHERE event_id IN {ids:Array(UUID)} "
        "GROUP BY event_id", parameters={"ids": [e.event_id for e in events]}).result_rows)
    assert [versions[e.event_id] for e in events] == [0, report.rating_version, 0, report.rating_version, 0]
    run = metering_store.query("SELECT events, changed, before_cost_usd, after_cost_usd FROM rating_runs FINAL "
                               "WHERE rating_version = {v:UInt64}", parameters={"v": report.rating_version})
    assert run.result_rows == [(4, 2, Decimal("7.75"), Decimal("7.053"))]

    again = reprice(metering_store, corrected_book(start), start, end, dry_run=False)
    assert (again.written, again.plan.totals.changed, again.plan.totals.after) == (0, 0, Decimal("7.053"))


def test_corrections_per_team_stay_queryable_after_merges(metering_store):
    start, end = month(2025, 6)
    seed(metering_store, start)
    reprice(metering_store, corrected_book(start), start, end, dry_run=False)
    metering_store.command("OPTIMIZE TABLE usage_costs FINAL")  # merges drop the superseded versions here
    assert final_total(metering_store, start, end) == Decimal("7.053")
    # As charged versus now, per team, for events re-rated at least once: the cost_corrections view.
    sql = """SELECT team, count(), sum(charged_cost_usd), sum(current_cost_usd), sum(correction_usd)
             FROM cost_corrections
             WHERE started_at >= {since:DateTime64(3, 'UTC')} AND started_at < {until:DateTime64(3, 'UTC')}
             GROUP BY team ORDER BY team"""
    rows = {r[0]: r[1:] for r in metering_store.query(sql, parameters={"since": start, "until": end}).result_rows}
    assert rows == {"search": (1, Decimal("3.50"), Decimal("2.80"), Decimal("-0.70")),
                    "ads": (1, None, Decimal("0.003"), Decimal("0.003"))}  # was unpriced: charged nothing
    sql, params = spend_query("team", start, end, corrections=True)
    result = metering_store.query(sql, parameters=params)
    spend = {r[0]: dict(zip(result.column_names, r, strict=True)) for r in result.result_rows}
    assert (spend["search"]["as_charged_cost_usd"], spend["search"]["cost_usd"]) == (Decimal("7.00"), Decimal("6.30"))
    assert spend["search"]["correction_usd"] == Decimal("-0.70")
    assert spend["ads"]["correction_usd"] == Decimal("0.003")


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aimeter", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, check=False)


def write_config(directory: Path, start: datetime) -> Path:
    (directory / "overrides.yaml").write_text(OVERRIDES.format(mid=(start + timedelta(days=14)).date()))
    path = directory / "config.yaml"
    path.write_text(CONFIG_TEXT + "price_overrides: overrides.yaml\n")
    return path


def test_cli_refuses_to_write_while_another_process_holds_the_store(metering_store, chdb_path, tmp_path):
    start, end = month(2025, 7)
    out = cli(["reprice", "--since", f"{start:%Y-%m-%d}", "--until", f"{end:%Y-%m-%d}"],
              {"AIMETER_CLICKHOUSE_URL": f"chdb://{chdb_path}", "AIMETER_CONFIG": str(write_config(tmp_path, start)),
               "AIMETER_QUERY_PORT": str(free_port())})
    assert out.returncode == 3, out.stderr
    assert "is in use by another process" in out.stderr
    assert "nothing was written" in out.stderr


@pytest.mark.asyncio(loop_scope="session")
async def test_cli_dry_run_reads_through_the_owners_read_only_endpoint(metering_store, chdb_path, tmp_path):
    start, end = month(2025, 8)
    seed(metering_store, start)
    rows = raw_rows(metering_store)
    runner = await serve_queries(str(chdb_path), "127.0.0.1", 0)  # as the pricer serves it
    try:
        port = runner.addresses[0][1]
        out = await asyncio.to_thread(cli, ["reprice", "--since", f"{start:%Y-%m-%d}", "--until", f"{end:%Y-%m-%d}",
                                            "--dry-run"],
                                      {"AIMETER_CLICKHOUSE_URL": f"chdb://{chdb_path}", "AIMETER_QUERY_PORT": str(port),
                                       "AIMETER_CONFIG": str(write_config(tmp_path, start))})
    finally:
        await runner.cleanup()
    assert out.returncode == 0, out.stderr
    assert "total before: $7.750000   after: $7.053000   difference: -$0.697000" in out.stdout
    assert "dry run: nothing was written" in out.stdout
    assert "reprice: 4/4 events (100.0%)" in out.stderr
    assert raw_rows(metering_store) == rows


SEED_SCRIPT = """
import sys
from pathlib import Path
import clickhouse_connect
from aimeter.store.migrations import migrate
from tests.integration.test_reprice import month, seed
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
migrate(client)
seed(client, month(2025, 9)[0])
client.close()
"""


def test_cli_reprices_a_store_nobody_holds(tmp_path):
    store, start = tmp_path / "chdb", month(2025, 9)[0]
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", SEED_SCRIPT, str(store)], check=True, cwd=repo, timeout=120)
    env = {"AIMETER_CLICKHOUSE_URL": f"chdb://{store}", "AIMETER_CONFIG": str(write_config(tmp_path, start)),
           "AIMETER_QUERY_PORT": str(free_port())}
    out = cli(["reprice", "--since", "2025-09-01", "--until", "2025-10-01"], env)
    assert out.returncode == 0, out.stderr
    assert "total before: $7.750000   after: $7.053000" in out.stdout
    assert "wrote 2 priced rows as rating_version 1" in out.stdout
    again = cli(["reprice", "--since", "2025-09-01", "--until", "2025-10-01"], env)
    assert "nothing changed: no rows written" in again.stdout
    spend = cli(["spend", "--since", "2025-09-01", "--until", "2025-10-01", "--corrections", "--format", "csv"], env)
    assert spend.returncode == 0, spend.stderr
    header, *rows = (line.split(",") for line in spend.stdout.splitlines())  # data only: the title is on stderr
    assert header[0] == "team"
    lines = {row[0]: row for row in rows}
    assert lines["search"][header.index("correction_usd")] == "-0.700000000000"
