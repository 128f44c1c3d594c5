"""``aimeter budgets set|list|show``: the budgets of the config and of the gateway keys, and where each stands.

* ``list``: every budget, from the config (``budgets.caps``) and from the key store (``limits["budgets"]`` of
  each active key).
* ``show [NAME]``: spent this period (the priced ledger in ClickHouse), reserved by requests in flight (each
  gateway's ``GET /budgets``; ``--gateway URL``, repeatable, default the local one) and remaining.
* ``set NAME --key KEY_ID --usd N``: a key's budget, written to its record in the key store; every gateway
  enforces it within seconds. Team, project and user budgets live in the config file: ``set`` prints the entry
  to add there (``--team/--project/--user``), since rewriting a YAML file would drop its comments.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aimeter.budgets.ledger import to_units, to_usd
from aimeter.budgets.model import Budget, Enforcement, KafkaDown, Period, budget_window
from aimeter.budgets.spec import KeyBudgetSpec, key_budgets
from aimeter.budgets.sync import committed_totals
from aimeter.config import ConfigError, load_config
from aimeter.metrics_auth import ensure_token
from aimeter.reports.format import render
from aimeter.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    budgets = sub.add_parser("budgets", help="list, show and set USD budgets (per key, team, project or user)")
    actions = budgets.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every budget, from the config and the key store")
    listing.add_argument("--config", type=Path)
    listing.add_argument("--format", default="table", choices=["table", "csv", "json"])
    listing.set_defaults(func=cmd_list)
    show = actions.add_parser("show", help="spent (ledger), reserved (gateways) and remaining, this period")
    show.add_argument("name", nargs="?", help="one budget (default: all)")
    show.add_argument("--config", type=Path)
    show.add_argument("--gateway", action="append", default=[],
                      help="a gateway's base URL to ask for reservations (repeatable; default the local gateway)")
    show.add_argument("--format", default="table", choices=["table", "csv", "json"])
    show.set_defaults(func=cmd_show)
    put = actions.add_parser("set", help="set a key's budget in the key store (or print a config entry)")
    put.add_argument("name")
    who = put.add_mutually_exclusive_group(required=True)
    for scope in ("key", "team", "project", "user"):
        who.add_argument(f"--{scope}", metavar="KEY_ID" if scope == "key" else scope.upper())
    put.add_argument("--usd", type=Decimal, help="the cap in USD (required unless --delete)")
    put.add_argument("--period", default="month", choices=[p.value for p in Period])
    put.add_argument("--timezone", default="UTC", help="IANA timezone of the period's boundaries")
    put.add_argument("--soft", action="store_true", help="notify only (alerts), never refuse")
    put.add_argument("--fail-closed", action="store_true", help="refuse while Kafka is down (default: serve)")
    put.add_argument("--delete", action="store_true", help="remove the key's budget of this name")
    put.set_defaults(func=cmd_set)


def _key_admin(settings: Settings) -> Any:
    from aimeter.keys_cli import key_admin  # noqa: PLC0415 - Kafka client only when keys are read

    return key_admin(settings)


def all_budgets(settings: Settings, config_path: Path | None) -> list[tuple[Budget, str]]:
    """(budget, where it is kept): the config's, then the key store's."""
    found: list[tuple[Budget, str]] = []
    path = config_path or settings.config
    if path is not None:
        config = load_config(path)
        found += [(spec.budget(), "config") for spec in (config.budgets.caps if config.budgets else [])]
    if settings.auth == "keys":
        keyed, _ = key_budgets(_key_admin(settings).load())
        found += [(b, "key store") for b in keyed.values()]
    return found


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [[b.name, b.scope.value, b.scope_value, b.amount_usd, b.period.value, b.timezone, b.enforcement.value,
             b.on_kafka_down.value, where] for b, where in all_budgets(settings, args.config)]
    print(render(["name", "scope", "value", "usd", "period", "timezone", "enforcement", "on_kafka_down", "kept in"],
                 rows, args.format))
    return 0


def gateway_views(urls: list[str], token: str) -> tuple[dict[str, tuple[Decimal, int]], list[str]]:
    """Reserved USD and requests in flight per budget name, summed over the gateways; and who did not answer."""
    reserved: dict[str, tuple[Decimal, int]] = {}
    missing: list[str] = []
    for url in urls:
        request = urllib.request.Request(f"{url.rstrip('/')}/budgets",  # noqa: S310 - an operator's own gateway
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                view = json.loads(answer.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            missing.append(f"{url} ({getattr(exc, 'reason', exc)})")
            continue
        for b in view["budgets"]:
            usd, count = reserved.get(b["name"], (Decimal(0), 0))
            reserved[b["name"]] = (usd + Decimal(b["reserved_usd"]), count + int(b["in_flight"]))
    return reserved, missing


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.budgets.setup import ledger_client  # noqa: PLC0415 - ClickHouse client only here

    budgets = [(b, w) for b, w in all_budgets(settings, args.config) if args.name in (None, b.name)]
    if not budgets:
        raise ConfigError(f"no budget named {args.name!r}; `aimeter budgets list` shows them" if args.name else
                          "no budgets in the config or the key store")
    now = time.time()
    client = ledger_client(settings.resolved_clickhouse_url, settings.query_port)
    holders = [type("A", (), {"budget": b})() for b, _ in budgets]
    spent = {name: units for name, _, units in committed_totals(client, holders, now, now)}
    urls = args.gateway or [f"http://127.0.0.1:{settings.gateway_port}"]
    reserved, missing = gateway_views(urls, ensure_token(settings.resolved_metrics_token_file))
    rows = []
    for budget, where in budgets:
        window = budget_window(budget, datetime.fromtimestamp(now, UTC))
        held, in_flight = reserved.get(budget.name, (Decimal(0), 0))
        used = to_usd(spent[budget.name])
        rows.append([budget.name, f"{budget.scope.value}={budget.scope_value}", budget.amount_usd,
                     f"{used:.6f}", f"{held:.6f}", in_flight,
                     f"{to_usd(to_units(budget.amount_usd) - spent[budget.name]) - held:.6f}",
                     f"{window.reset:%Y-%m-%d %H:%M} UTC", budget.enforcement.value, where])
    print(render(["name", "scope", "usd", "spent", "reserved", "in_flight", "remaining", "resets", "enforcement",
                  "kept in"], rows, args.format))
    if missing:
        print(f"reserved is partial: no answer from {', '.join(missing)}")
    return 0


def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    if args.usd is None and not args.delete:
        raise ValueError("--usd is required (or --delete)")
    spec = KeyBudgetSpec(name=args.name, usd=args.usd or 0, period=Period(args.period), timezone=args.timezone,
                         enforcement=Enforcement.SOFT if args.soft else Enforcement.HARD,
                         on_kafka_down=KafkaDown.FAIL_CLOSED if args.fail_closed else KafkaDown.FAIL_OPEN)
    if args.key is None:
        scope, value = next((s, getattr(args, s)) for s in ("team", "project", "user") if getattr(args, s))
        entry = {"name": spec.name, "scope": scope, "value": value, **{k: v for k, v in spec.entry().items()
                                                                      if k != "name"}}
        print("team, project and user budgets are kept in the config file; add under budgets.caps:\n"
              f"    - {json.dumps(entry)}\nand restart the gateways (`aimeter gateway`).")
        return 2
    store = _key_admin(settings)
    record = store.load().get(args.key)
    if record is None or not record.active:
        raise ValueError(f"no active key with id {args.key!r} in {store.where()}; `aimeter keys list` shows them")
    others = [e for e in (record.limits.get("budgets") or []) if not (isinstance(e, dict) and e.get("name") ==
                                                                       spec.name)]
    entries = others if args.delete else [*others, spec.entry()]
    store.put([replace(record, limits={**record.limits, "budgets": entries})])
    what = "removed" if args.delete else f"set to ${spec.usd} per {spec.period.value} ({spec.timezone})"
    print(f"budget {spec.name!r} of key {args.key} {what} in {store.where()}; gateways apply it within seconds")
    return 0
