"""The ``aimeter`` command: run the parts, run them all, and read spend back."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from aimeter import demo_cli, keys_cli
from aimeter.budgets import cli as budgets_cli
from aimeter.config import ConfigError, GatewayConfig, load_config
from aimeter.gateway import ratelimit_cli
from aimeter.grafana import cli as grafana_cli
from aimeter.reports import chargeback, reconcile
from aimeter.reports.format import parse_when, render
from aimeter.reports.spend_by import tag_name
from aimeter.reports.sql import SPEND_DIMENSIONS
from aimeter.resources import data_path
from aimeter.settings import Settings, SettingsError, load_settings

DEMO_CONFIG = data_path("examples", "demo.yaml")
DEMO_UPSTREAM_PORT = 8090


def _config(settings: Settings, override: Path | None) -> tuple[Path, GatewayConfig]:
    path = override or settings.config
    if path is None:
        raise ConfigError("no config: pass --config FILE or set AIMETER_CONFIG (see examples/aimeter.example.yaml)")
    return path, load_config(path)


def _bootstrap(settings: Settings) -> str:
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.kafka_port}"


def _log_to_stderr() -> None:
    """Long-running parts log warnings (spooling, retries) and their own info lines with a timestamp."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.gateway.run import run_gateway  # noqa: PLC0415 - keep CLI start fast

    _log_to_stderr()
    _, config = _config(settings, args.config)
    run_gateway(settings, config, _bootstrap(settings))
    return 0


def cmd_pricer(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.pricer.run import run_pricer  # noqa: PLC0415

    _log_to_stderr()
    _, config = _config(settings, args.config)
    asyncio.run(run_pricer(settings, config, _bootstrap(settings)))
    return 0


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.alerts.run import run_alerts  # noqa: PLC0415

    _log_to_stderr()
    _, config = _config(settings, args.config)
    return asyncio.run(run_alerts(settings, config, _bootstrap(settings)))


def cmd_kafka(_args: argparse.Namespace, settings: Settings) -> int:
    import signal  # noqa: PLC0415

    from aimeter.local.kafka import LocalKafka  # noqa: PLC0415

    if settings.kafka_bootstrap:
        print(f"AIMETER_KAFKA_BOOTSTRAP is set ({settings.kafka_bootstrap}): not starting a local broker")
        return 0
    data = settings.data_dir.resolve()
    kafka = LocalKafka(data / "kafka", port=settings.kafka_port, controller_port=settings.kafka_port + 1,
                       cache_dir=data / "cache" / "kafka")
    print(f"kafka: listening on {kafka.start()} (data in {data / 'kafka'}); Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while kafka.running:
            time.sleep(1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        kafka.stop()
    return 0


def cmd_fake_upstream(args: argparse.Namespace, _settings: Settings) -> int:
    from aimeter.fake_upstream.app import main as fake_main  # noqa: PLC0415

    fake_main(["--host", args.host, "--port", str(args.port), "--latency-ms", str(args.latency_ms)])
    return 0


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.store.client import get_client  # noqa: PLC0415
    from aimeter.store.migrations import migrate  # noqa: PLC0415

    applied = migrate(get_client(settings.resolved_clickhouse_url))
    print("applied: " + (", ".join(applied) if applied else "nothing (schema is up to date)"))
    return 0


def cmd_schema(args: argparse.Namespace, _settings: Settings) -> int:
    from aimeter.events.schema import SCHEMA_PATH, render_schema  # noqa: PLC0415

    text = render_schema()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run `aimeter schema`", file=sys.stderr)
            return 1
        print(f"{SCHEMA_PATH} is up to date")
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


def _spend_dimension(value: str) -> str:
    """``--by``: a spend column, ``key``, or ``tag:<name>``; anything else is a usage error (exit 2)."""
    if value in SPEND_DIMENSIONS or value == "key":
        return value
    if value.startswith("tag:"):
        try:
            tag_name(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(SPEND_DIMENSIONS)}, key, "
                                     "tag:<name>)")


def cmd_spend(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.reports.spend_by import per_request_dimension, spend_by_request_query  # noqa: PLC0415
    from aimeter.reports.sql import spend_query  # noqa: PLC0415
    from aimeter.store.client import report_client  # noqa: PLC0415

    # Not cut to the second: "until now" cut to hh:mm:ss.000 left out requests of the current second that were
    # already stored (the window binds as DateTime64(3), so now counts to the millisecond).
    now = datetime.now(UTC)
    since = parse_when(args.since, now) if args.since else now.replace(day=1, hour=0, minute=0, second=0,
                                                                         microsecond=0)
    until = min(parse_when(args.until, now) if args.until else now, now)  # no hour after now is ever billed
    if per_request_dimension(args.by):
        if args.corrections:
            print(f"spend: --corrections is not available with --by {args.by}", file=sys.stderr)
            return 2
        sql, params = spend_by_request_query(args.by, since, until)
    else:
        sql, params = spend_query(args.by, since, until, corrections=args.corrections)
    client = report_client(settings.resolved_clickhouse_url, settings.query_port)
    result = client.query(sql, parameters=params)
    title = (f"spend by {args.by}, {since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC "
             + ("(cost: marginal; GPU hours are allocated to teams, not keys or tags: see --by team for loaded "
                "cost; unpriced: requests with no cost, unpriced or unmetered)" if per_request_dimension(args.by) else
                "(cost: marginal; loaded: GPU time billed in full, idle apart; savings: reference minus loaded; "
                "unpriced: requests with no cost, unpriced or unmetered)"))
    # Machine formats carry data only: the title goes to stderr, so `json.load` and CSV readers see no junk row.
    print(title, file=sys.stdout if args.format == "table" else sys.stderr)
    print(render(result.column_names, result.result_rows, args.format))
    return 0


def cmd_reprice(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.pricer.overrides_load import load_price_book  # noqa: PLC0415
    from aimeter.reprice import StoreBusyError, run_command  # noqa: PLC0415
    from aimeter.store.client import report_client  # noqa: PLC0415

    _, config = _config(settings, args.config)
    book = load_price_book(config)
    now = datetime.now(UTC)
    since, until = parse_when(args.since, now), parse_when(args.until, now)
    url = settings.resolved_clickhouse_url
    try:
        return run_command(url, lambda: report_client(url, settings.query_port), config, book, since=since,
                           until=until, dry_run=args.dry_run, out=sys.stdout, err=sys.stderr)
    except StoreBusyError as exc:
        print(f"aimeter reprice: {exc}", file=sys.stderr)
        return 3


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.local.demo import demo_config  # noqa: PLC0415
    from aimeter.local.up import run_up  # noqa: PLC0415

    upstream_port = (args.upstream_port or settings.demo_upstream_port) if args.demo else None
    config_path = args.config or settings.config or (
        demo_config(DEMO_CONFIG, upstream_port, settings.data_dir, DEMO_UPSTREAM_PORT) if upstream_port else None)
    if config_path is None:
        raise ConfigError("`aimeter up` needs --config FILE or AIMETER_CONFIG (or use --demo)")
    from aimeter.pricer.overrides_load import load_price_book  # noqa: PLC0415

    load_price_book(load_config(config_path))  # validate the config and price overrides before starting anything
    return run_up(settings, config_path, demo=args.demo, keep_running=args.keep_running or not args.demo,
                  seconds=args.seconds, upstream_port=upstream_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimeter", description="Open AI usage metering.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run Kafka (unless configured), pricer and gateway")
    up.add_argument("--config", type=Path)
    up.add_argument("--demo", action="store_true", help="add the fake upstream and ~30 s of synthetic traffic")
    up.add_argument("--keep-running", action="store_true", help="keep serving after the demo")
    up.add_argument("--seconds", type=float, default=30.0, help="demo traffic duration")
    up.add_argument("--upstream-port", type=int, help="demo: the fake upstream's port "
                    f"(default AIMETER_DEMO_UPSTREAM_PORT or {DEMO_UPSTREAM_PORT})")
    up.set_defaults(func=cmd_up)
    for name, func, text in (("gateway", cmd_gateway, "run the gateway"), ("pricer", cmd_pricer, "run the pricer"),
                             ("alerts", cmd_alerts, "post soft-budget and spend-spike alerts to the webhook")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path)
        p.set_defaults(func=func)
    sub.add_parser("kafka", help="run a local single-node Kafka (KRaft) until Ctrl-C").set_defaults(func=cmd_kafka)
    fake = sub.add_parser("fake-upstream", help="run the fake OpenAI-compatible upstream")
    fake.add_argument("--host", default="127.0.0.1",
                      help="bind address (default: loopback only; 0.0.0.0 in a container of its own)")
    fake.add_argument("--port", type=int, default=DEMO_UPSTREAM_PORT)
    fake.add_argument("--latency-ms", type=float, default=0.0)
    fake.set_defaults(func=cmd_fake_upstream)
    sub.add_parser("migrate", help="apply ClickHouse migrations").set_defaults(func=cmd_migrate)
    schema = sub.add_parser("schema", help="regenerate schemas/usage_event.v1.json from the model")
    schema.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    schema.set_defaults(func=cmd_schema)
    spend = sub.add_parser("spend", help="spend from ClickHouse")
    spend.add_argument("--since", help="ISO date/time (UTC) or relative like 24h, 7d; default: start of month")
    spend.add_argument("--until", help="ISO date/time (UTC) or relative; default: now")
    spend.add_argument("--by", default="team", type=_spend_dimension,
                       metavar=f"{{{','.join(SPEND_DIMENSIONS)},key,tag:<name>}}",
                       help="group by a column, by gateway key (with its team), or by the value of one request tag")
    spend.add_argument("--format", default="table", choices=["table", "csv", "json"])
    spend.add_argument("--corrections", action="store_true",
                       help="add as-charged cost (rating version 0) and the correction since (re-rating)")
    spend.set_defaults(func=cmd_spend)
    reprice = sub.add_parser("reprice", help="re-price a period under the current price book (new rating version)")
    reprice.add_argument("--since", required=True, help="ISO date/time (UTC) or relative like 7d")
    reprice.add_argument("--until", default="now", help="ISO date/time (UTC) or relative; default: now")
    reprice.add_argument("--dry-run", action="store_true", help="compute and print the changes, write nothing")
    reprice.add_argument("--config", type=Path)
    reprice.set_defaults(func=cmd_reprice)
    keys_cli.register(sub)
    budgets_cli.register(sub)
    ratelimit_cli.register(sub)
    reconcile.register(sub)
    chargeback.register(sub)
    grafana_cli.register(sub)
    demo_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except (SettingsError, ConfigError, ValueError) as exc:
        print(f"aimeter {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
