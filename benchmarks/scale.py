"""``make bench-scale``: the ledger at 1M, 10M and 100M events, raw ``FINAL`` against the hourly rollups.

Per size, a fresh embedded store (chDB) gets that many priced events spread over the 90 days before the last
whole hour, generated inside the engine (``INSERT ... SELECT FROM numbers()``) with realistic attribution
(2,000 users in 20 teams and 60 projects, 200 keys, 10 models on 5 backends, 2 of them self-hosted with
GPU periods; a user sends 90% of their traffic to one model), 1% redelivered duplicates and 0.5% re-rated
versions. Then it prints, medians of ``--runs``:

* the month chargeback (``aimeter chargeback --month`` SQL: lines + daily) over the last whole month;
* the dashboards over 90 days: every panel of every dashboard as shipped (rollups), and the spend panels
  built without rollups (raw FINAL), as the plugin would expand them (3 h interval);
* the rollup job: the first build, and a refresh after new events;
* ingestion with the rollups maintained: the pricer's build_batch + insert_batch at its batch (the insert-time
  marks included), CPU per event, against a store without the rollup migrations (same run, alternating); and
  the rollup job apart, CPU per hour it recomputes (it runs off the insert path);
* bytes on disk per event (raw tables, rollup tables).

Results go to benchmarks/results/scale.{json,md}; ``benchmarks/scale_chart.py`` draws scale.svg. Not for CI:
100M events take over an hour and ~20 GB on the 2-core box (``--sizes 20000`` is the smoke size;
``--no-raw-panels`` skips the raw FINAL panel baselines, minutes each at 100M).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from aimeter.alerts.budget_table import COLUMNS, window_rows
from aimeter.budgets.model import Budget, Period, ScopeKind
from aimeter.grafana.build import load_dashboards
from aimeter.grafana.macros import ALL, QueryContext, Variable, expand
from aimeter.reports import budget_use, panels, panels_ops, rollup
from aimeter.reports.sql import aggregate_query, bound_window, chargeback_query, daily_query
from aimeter.settings import Settings
from aimeter.store.migrations import MIGRATIONS_DIR, migrate

RESULTS = Path(__file__).parent / "results"
DAYS = 90
SLOW_S = 5.0
ROUTES = [  # backend, provider, deployment, model, $ per 1M input, $ per 1M output
    ("openai", "openai", "proprietary", "gpt-4o-mini", "0.15", "0.6"),
    ("openai", "openai", "proprietary", "gpt-4o", "2.5", "10"),
    ("openai", "openai", "proprietary", "o3", "2", "8"),
    ("anthropic", "anthropic", "proprietary", "claude-sonnet-4-5", "3", "15"),
    ("anthropic", "anthropic", "proprietary", "claude-opus-4-1", "15", "75"),
    ("gemini", "google", "proprietary", "gemini-2.5-pro", "1.25", "10"),
    ("gemini", "google", "proprietary", "gemini-2.5-flash", "0.3", "2.5"),
    ("vllm", "vllm", "self_hosted", "llama-3.1-70b", "0.05", "0.05"),
    ("vllm", "vllm", "self_hosted", "llama-3.1-8b", "0.01", "0.01"),
    ("ollama", "ollama", "self_hosted", "qwen2.5-7b", "0.02", "0.02"),
]


def _array(i: int) -> str:
    return "[" + ", ".join(f"'{r[i]}'" for r in ROUTES) + "]"


def rows_sql(first: int, count: int, total: int, start: datetime, rating_version: int = 0) -> str:
    """One SELECT yielding the shared columns of events ``first .. first + count`` (of ``total``)."""
    span_ms = DAYS * 86_400_000
    return f"""
SELECT
    toUUID(concat('00000000-0000-4000-8000-', leftPad(lower(hex(n)), 12, '0'))) AS event_id,
    toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalMillisecond(intDiv(n * {span_ms}, {total}))
        AS started_at,
    started_at + toIntervalMillisecond(200 + h % 9000) AS ended_at,
    cityHash64(n) AS h,
    intDiv(h, 60) % 2000 AS u,
    -- A user belongs to one team and project, calls through one key, and 90% of their traffic goes to one model.
    toUInt8(if(h % 10 = 0, intDiv(h, 1000), u) % {len(ROUTES)} + 1) AS r,
    {_array(0)}[r] AS backend, {_array(1)}[r] AS provider, {_array(2)}[r] AS deployment, {_array(3)}[r] AS model,
    concat('team-', toString(u % 20)) AS team,
    concat(team, '-p', toString(intDiv(u, 20) % 3)) AS project,
    concat('user', toString(u)) AS user,
    concat('key', toString(u % 200)) AS api_key_id,
    toUInt64(10 + intDiv(h, 7) % 8000) AS input_tokens,
    toUInt64(if(h % 5 = 0, intDiv(input_tokens, 2), 0)) AS cache_read_input_tokens,
    toUInt64(1 + intDiv(h, 11) % 1500) AS output_tokens,
    h % 200 = 0 AS unpriced,
    if(unpriced, NULL, toDecimal128(toDecimal128(input_tokens, 12) * toDecimal128({_array(4)}[r], 12) / 1000000
        + toDecimal128(output_tokens, 12) * toDecimal128({_array(5)}[r], 12) / 1000000
        + toDecimal128({rating_version}, 12) / 1000, 12)) AS cost_usd,
    if(deployment = 'self_hosted', toDecimal128(toDecimal128(input_tokens, 12) * 2.5 / 1000000
        + toDecimal128(output_tokens, 12) * 10 / 1000000, 12), NULL) AS reference_cost_usd
FROM (SELECT number AS n FROM numbers({first}, {count}))
"""


def insert_rows(client: Client, first: int, count: int, total: int, start: datetime,
                rating_version: int = 0) -> None:
    src = rows_sql(first, count, total, start, rating_version)
    if rating_version == 0:
        client.command(f"""
INSERT INTO usage_events (event_id, gateway_id, started_at, ended_at, api, backend, provider, deployment,
    model_requested, model_served, stream, status, http_status, usage_source, input_tokens, cache_read_input_tokens,
    output_tokens, team, project, user, api_key_id)
SELECT event_id, 'gw-1', started_at, ended_at, 'openai.chat', backend, provider, deployment, model, model, 1, 'ok',
    200, 'reported', input_tokens, cache_read_input_tokens, output_tokens, team, project, user, api_key_id
FROM ({src})""", settings={"optimize_on_insert": 0})
    client.command(f"""
INSERT INTO usage_costs (event_id, started_at, ended_at, api, backend, provider, deployment, model, status, stream,
    team, project, user, api_key_id, input_tokens, cache_read_input_tokens, output_tokens, cost_usd,
    input_text_cost_usd, cache_read_cost_usd, reference_cost_usd, pricing_status, price_source, price_version,
    rating_version, priced_at)
SELECT event_id, started_at, ended_at, 'openai.chat', backend, provider, deployment, model, 'ok', 1, team, project,
    user, api_key_id, input_tokens, cache_read_input_tokens, output_tokens, cost_usd, cost_usd,
    if(cache_read_input_tokens > 0, toDecimal128(0, 12), NULL), reference_cost_usd,
    if(unpriced, 'unpriced', 'priced'), 'bench', 'bench', {rating_version}, now64(3)
FROM ({src})""", settings={"optimize_on_insert": 0})


def generate(client: Client, total: int, start: datetime, chunk: int = 5_000_000) -> float:
    t0 = time.perf_counter()
    client.insert("gpu_cost_periods", [
        ["vllm", start - timedelta(hours=1), None, "H100", 8, 8 * 2.49, 9_000_000 * 8, 1, 0],
        ["ollama", start - timedelta(hours=1), None, "L4", 1, 0.80, 1_400_000, 1, 0]],
        column_names=["backend", "effective_from", "effective_to", "gpu_type", "gpu_count", "usd_per_hour",
                      "tokens_per_hour", "version", "is_deleted"])
    for first in range(0, total, chunk):
        insert_rows(client, first, min(chunk, total - first), total, start)
        print(f"  generated {min(first + chunk, total):,}/{total:,} events", flush=True)
    # 1% redelivered (the same events again) and 0.5% re-rated (rating version 1, another cost).
    step = max(total // 100, 1)
    for first in range(0, total, total // 4 or 1):
        insert_rows(client, first, min(step // 4 or 1, total - first), total, start)
        insert_rows(client, first, min(step // 8 or 1, total - first), total, start, rating_version=1)
    return time.perf_counter() - t0


def median_s(client: Client, sql: str, params: dict[str, Any] | None = None, runs: int = 3) -> float:
    """Median seconds of ``runs`` runs; a query slower than 5 s is run once (its figure is then one run)."""
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        client.query(sql, parameters=params or {})
        times.append(time.perf_counter() - t0)
        if times[0] > SLOW_S:
            break
    return statistics.median(times)


def chargeback_seconds(client: Client, month: datetime, *, rollups: bool, runs: int) -> float:
    since = month
    until = (month + timedelta(days=32)).replace(day=1)
    # As `aimeter chargeback --month` runs a past, rolled-up month: clean_only first (reports/clean_first.py).
    window = dataclasses.replace(bound_window(since, until), rollups=rollups, clean_only=rollups)
    lines, params = chargeback_query("team", window)
    daily, _ = daily_query("team", window)
    return median_s(client, lines, params, runs) + median_s(client, daily, params, runs)


def grafana_context(now: datetime, dashboard: dict[str, Any]) -> QueryContext:
    """The last 90 days at a 3 h interval, every variable at its default (All; group_by = team)."""
    variables = {}
    for v in dashboard["templating"]["list"]:
        default = ALL if v.get("includeAll") else v["current"]["value"]
        variables[v["name"]] = Variable(v["name"], default)
    return QueryContext(now - timedelta(days=DAYS), now, timedelta(hours=3), variables)


def sync_budgets(client: Client, now: datetime) -> None:
    """Budgets on generated scopes (a team, a project, a key, a user; month and day; UTC and Asia/Kolkata, whose
    day starts at :30 UTC) written as the pricer writes them, so the Budget use panel has budgets to read: without
    any it has no window to sum and measures nothing."""
    budgets = [Budget("team-month", ScopeKind.TEAM, "team-3", Decimal(5000)),
               Budget("team-day-kolkata", ScopeKind.TEAM, "team-3", Decimal(200), Period.DAY, "Asia/Kolkata"),
               Budget("project-month-kolkata", ScopeKind.PROJECT, "team-5-p1", Decimal(900), Period.MONTH,
                      "Asia/Kolkata"),
               Budget("key-day", ScopeKind.KEY, "key17", Decimal(20), Period.DAY),
               Budget("user-month", ScopeKind.USER, "user42", Decimal(50))]
    client.command("TRUNCATE TABLE budget_windows")
    client.insert("budget_windows", window_rows(budgets, now, timedelta(days=40)), column_names=COLUMNS)


def panel_seconds(client: Client, now: datetime, runs: int) -> dict[str, float]:
    """Every panel of every dashboard, as shipped (rollups where the panel reads the ledger's spend)."""
    out = {}
    for dashboard in load_dashboards():
        ctx = grafana_context(now, dashboard)
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                if "rawSql" not in target:  # a Prometheus panel: no SQL
                    continue
                sql = expand(target["rawSql"], ctx)
                out[f"{dashboard['title']}: {panel['title']}"] = median_s(client, sql, runs=runs)
    return out


def raw_panel_seconds(client: Client, now: datetime, runs: int) -> dict[str, float]:
    """The spend panels built without rollups (FINAL over raw rows), the baseline of the same panels."""
    ctx = grafana_context(now, next(d for d in load_dashboards() if d["uid"] == "aimeter-spend"))
    raw = dataclasses.replace(panels.GRAFANA_WINDOW, rollups=False)
    built = {
        "AI spend overview: Spend over time by team": panels.spend_over_time("team", raw),
        "AI spend overview: Total spend": aggregate_query(["loaded_cost_usd", "cost_usd"], raw,
                                                          panels.VARIABLE_FILTERS)[0],
        "Chargeback: Chargeback by month": chargeback_query("team", raw, panels.VARIABLE_FILTERS)[0],
        "AI spend overview: Top users": panels.top_by("user", "user", raw),
        "AI spend overview: $ per 1M tokens by model": panels.usd_per_million_by_model(raw),
        "Chargeback: Idle self-hosted capacity": panels.idle_capacity(raw),
        "Gateway operations: Latency p50 / p95 / p99": panels_ops.latency(raw),
        "Gateway operations: Attempts by status": panels_ops.status_breakdown(raw),
        "AI spend overview: Budget use per scope": budget_use.budget_use_panel(panels.VARIABLE_FILTERS, rollups=False),
    }
    return {name: median_s(client, expand(sql, ctx), runs=runs) for name, sql in built.items()}


def disk_bytes(client: Client) -> dict[str, int]:
    rows = client.query("SELECT table, sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
                        "currentDatabase() GROUP BY table").result_rows
    return {t: int(b) for t, b in rows}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ingest_us_per_event(client: Client, events: int, batch: int) -> float:
    """CPU µs per event of the pricer's insert path (build_batch + insert_batch; with the rollup migration the
    insert-time views mark the hours written), into one whole hour that has passed."""
    from aimeter.pricer.overrides_load import load_price_book  # noqa: PLC0415
    from aimeter.pricer.rows import build_batch  # noqa: PLC0415
    from aimeter.pricer.write import insert_batch  # noqa: PLC0415
    from benchmarks.pricer_micro import CONFIG, make_events  # noqa: PLC0415

    book = load_price_book(CONFIG)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    values = make_events(events, seed=int(time.time()), start=hour)
    build_batch(values[:100], book, datetime.now(UTC))
    start = cpu()
    for i in range(0, events, batch):
        insert_batch(client, build_batch(values[i:i + batch], book, datetime.now(UTC)))
    return (cpu() - start) / events * 1e6


def job_seconds(client: Client) -> tuple[float, float, int]:
    """The rollup job over what was written since the last one: (CPU s, wall s, hours computed)."""
    start, t0 = cpu(), time.perf_counter()
    done = rollup.refresh(client)
    return cpu() - start, time.perf_counter() - t0, done.computed


def store(root: Path, database: str, *, reuse: bool = False) -> Client:
    """One chDB directory per process (chDB binds a process to one), one database per store."""
    admin = clickhouse_connect.get_client(dsn=f"chdb://{root / 'chdb'}")
    if reuse and int(admin.command(f"SELECT count() FROM system.databases WHERE name = '{database}'")):
        return clickhouse_connect.get_client(dsn=f"chdb://{root / 'chdb'}", database=database)
    admin.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    admin.command(f"CREATE DATABASE {database}")
    return clickhouse_connect.get_client(dsn=f"chdb://{root / 'chdb'}", database=database)


def drop(root: Path, database: str) -> None:
    clickhouse_connect.get_client(dsn=f"chdb://{root / 'chdb'}").command(f"DROP DATABASE IF EXISTS {database} SYNC")


def measure(size: int, root: Path, runs: int, now: datetime, *, reuse: bool = False,
            generate_only: bool = False, raw_panels: bool = True) -> dict[str, Any]:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    client = store(root, f"scale_{size}", reuse=reuse)
    gen_s = 0.0
    migrate(client)  # a kept store (--reuse) gets the migrations added since
    if not int(client.command("SELECT count() FROM usage_events")):  # a new store (else a kept one, --reuse)
        gen_s = generate(client, size, start)
    if generate_only:
        return {"events": size, "generate_s": gen_s}
    t0 = time.perf_counter()
    built = rollup.refresh(client)
    build_s = time.perf_counter() - t0
    month = (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month_events = int(client.command(
        f"SELECT count() FROM usage_costs FINAL WHERE toStartOfMonth(started_at) = '{month:%Y-%m-%d}'"))
    sync_budgets(client, now)
    result: dict[str, Any] = {
        "events": size, "month": f"{month:%Y-%m}", "month_events": month_events, "generate_s": round(gen_s, 1),
        "rollup_build_s": round(build_s, 2), "rollup_hours": built.computed + built.empty,
        "chargeback_raw_s": chargeback_seconds(client, month, rollups=False, runs=runs),
        "chargeback_rollup_s": chargeback_seconds(client, month, rollups=True, runs=runs),
        "panels_rollup_s": panel_seconds(client, now, runs),
        "panels_raw_s": raw_panel_seconds(client, now, runs) if raw_panels else {},
    }
    disk = disk_bytes(client)
    raw_tables = ("usage_events", "usage_costs", "usage_cost_versions")
    rollup_tables = ("usage_rollup", "usage_rollup_teams", "ops_rollup", "ops_rollup_all", "rollup_hours",
                     "rollup_marks")
    result["bytes_per_event_raw"] = round(sum(disk.get(t, 0) for t in raw_tables) / size, 1)
    result["bytes_per_event_rollup"] = round(sum(disk.get(t, 0) for t in rollup_tables) / size, 2)
    result["rollup_rows"] = int(client.command("SELECT count() FROM usage_rollup"))
    for table in ("usage_rollup_teams", "ops_rollup", "ops_rollup_all"):
        result[f"{table}_rows"] = int(client.command(f"SELECT count() FROM {table}"))
    result["ingest_us_per_event_rollups"] = ingest_us_per_event(client, 20_000, 20_000)
    t0 = time.perf_counter()
    rollup.refresh(client)
    result["refresh_after_ingest_s"] = round(time.perf_counter() - t0, 3)
    client.close()
    return result


def ingest_compare(root: Path, runs: int, events: int) -> dict[str, float]:
    """Same run, alternating: the pricer's insert path (at its default batch, AIMETER_PRICER_BATCH_MAX) into a
    store without the rollup migrations and into one with them (the insert-time views mark hours), medians of
    CPU µs per event. The rollup job runs apart from the insert path (its own thread and client); its cost is
    measured apart too: CPU per hour of ``events`` events it recomputes (every source: costs, GPU, ops)."""
    before = root / "migrations-without-rollups"
    shutil.rmtree(before, ignore_errors=True)
    before.mkdir(parents=True)
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:4]) < 10:
            shutil.copy(path, before)
    batch = Settings.model_fields["pricer_batch_max"].default
    off, on, job_cpu, job_wall = [], [], [], []
    for run in range(runs):
        for rollups, out in ((False, off), (True, on)):
            database = f"ingest_{run}_{int(rollups)}"
            client = store(root, database)
            migrate(client, MIGRATIONS_DIR if rollups else before)
            out.append(ingest_us_per_event(client, events, batch))
            if rollups:
                cpu_s, wall_s, hours = job_seconds(client)
                job_cpu.append(cpu_s / max(hours, 1))
                job_wall.append(wall_s / max(hours, 1))
            drop(root, database)
    a, b = statistics.median(off), statistics.median(on)
    job = statistics.median(job_cpu)
    return {"without_rollups_us": round(a, 2), "with_rollups_us": round(b, 2),
            "without_rollups_events_per_s": round(1e6 / a), "with_rollups_events_per_s": round(1e6 / b),
            "change_pct": round((b - a) / a * 100, 1), "batch": batch, "events_per_hour": events,
            "job_cpu_s_per_hour": round(job, 3), "job_wall_s_per_hour": round(statistics.median(job_wall), 3),
            "job_cpu_us_per_event": round(job / events * 1e6, 2)}


def markdown(results: list[dict[str, Any]], ingest: dict[str, float], command: str) -> str:
    lines = [f"# Scale: raw FINAL against the hourly rollups\n\n`{command}`, {datetime.now(UTC):%Y-%m-%d}, "
             "2-core box, chDB (ClickHouse 26.9), medians of 3.\n",
             "| events | month chargeback raw | with rollups | slowest 90-day panel (rollups) | spend panels raw "
             "(slowest) | rollup build | bytes/event raw | bytes/event rollups |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        slow_name, slow = max(r["panels_rollup_s"].items(), key=lambda kv: kv[1])
        raw_name, raw = max(r["panels_raw_s"].items(), key=lambda kv: kv[1], default=("not measured", math.nan))
        build = f"{r['rollup_build_s']:.1f} s" if r.get("rollup_build_s") else "not timed"
        raw_cell = "—" if math.isnan(raw) else f"{raw:.2f} s ({raw_name})"
        lines.append(f"| {r['events']:,} | {r['chargeback_raw_s']:.2f} s | {r['chargeback_rollup_s']:.2f} s | "
                     f"{slow:.2f} s ({slow_name}) | {raw_cell} | {build} | "
                     f"{r['bytes_per_event_raw']} | {r['bytes_per_event_rollup']} |")
    lines += ["", f"Ingestion (the pricer's build_batch + insert_batch at its batch of {ingest['batch']:,}, CPU per "
              f"event, same run, alternating): {ingest['without_rollups_us']} µs without the rollup migrations "
              f"({ingest['without_rollups_events_per_s']:,} events/s per core), {ingest['with_rollups_us']} µs with "
              f"them, the insert-time marks included ({ingest['with_rollups_events_per_s']:,} events/s): "
              f"{ingest['change_pct']:+.1f}%. The rollup job, apart from the insert path: "
              f"{ingest['job_cpu_s_per_hour']} s CPU ({ingest['job_wall_s_per_hour']} s wall) per hour of "
              f"{ingest['events_per_hour']:,} events it recomputes, {ingest['job_cpu_us_per_event']} µs per event.",
              ""]
    for r in results:
        lines += [f"## {r['events']:,} events ({r['month_events']:,} in {r['month']})", "",
                  *([r["note"], ""] if r.get("note") else []),
                  "| panel (90 days) | with rollups | raw FINAL |", "| --- | --- | --- |"]
        lines += [f"| {name} | {secs:.3f} s | {r['panels_raw_s'].get(name, float('nan')):.3f} s |"
                  for name, secs in sorted(r["panels_rollup_s"].items())]
        lines.append("")
    return "\n".join(lines).replace("| nan s |", "| — |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="where the stores go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--ingest-events", type=int, default=50_000)
    parser.add_argument("--reuse", action="store_true", help="keep the generated stores and measure kept ones")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--no-raw-panels", action="store_true", help="skip the raw FINAL panel baselines")
    parser.add_argument("--ingest-from", type=Path, help="the ingest comparison of an earlier run (scale.json)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    now = datetime.now(UTC)
    if args.ingest_from:
        ingest = json.loads(args.ingest_from.read_text())["ingest"]
    else:
        ingest = {} if args.generate_only else ingest_compare(root, args.runs, args.ingest_events)
    print(f"ingest: {ingest}", flush=True)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"size {size:,}", flush=True)
        results.append(measure(size, root, args.runs, now, reuse=args.reuse, generate_only=args.generate_only,
                               raw_panels=not args.no_raw_panels))
        print(json.dumps(results[-1], indent=1), flush=True)
        if args.generate_only:
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps({"ingest": ingest, "sizes": results}, indent=1) + "\n")
        (args.out / "scale.md").write_text(markdown(results, ingest, "make bench-scale") + "\n")
        if not args.reuse:
            drop(root, f"scale_{size}")
    if not args.generate_only:
        print((args.out / "scale.md").read_text())


if __name__ == "__main__":
    main()

