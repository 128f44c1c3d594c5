"""``aimeter ratelimits set|list``: requests and tokens per minute kept on a gateway key's record, and every limit
in force.

* ``set --key KEY_ID [--rpm N] [--tpm N] [--clear]``: writes ``rpm``/``tpm`` into the key's ``limits`` in the key
  store (other entries there, such as budgets, are kept); every gateway applies it as soon as the record
  reaches it, with no restart. They win over the config's line for that key.
* ``list``: the config's team and key limits and the key store's, with what each replica enforces.

Team limits live in the config file (``rate_limits.teams``), as rewriting a YAML file would drop its comments.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from aimeter.config import load_config
from aimeter.gateway.ratelimit_gate import RateLimit, RateLimits
from aimeter.reports.format import render
from aimeter.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    limits = sub.add_parser("ratelimits", help="requests and tokens per minute per key (key store) and team (config)")
    actions = limits.add_subparsers(dest="action", required=True)
    put = actions.add_parser("set", help="a key's requests/tokens per minute, kept on its record in the key store")
    put.add_argument("--key", required=True, help="the key id (am_<id>_...)")
    put.add_argument("--rpm", type=int, help="requests per minute")
    put.add_argument("--tpm", type=int, help="tokens per minute (input plus output)")
    put.add_argument("--clear", action="store_true", help="remove the key's own limits (the config's apply again)")
    put.set_defaults(func=cmd_set)
    listing = actions.add_parser("list", help="every rate limit: the config's and the key store's")
    listing.add_argument("--config", type=Path)
    listing.add_argument("--format", default="table", choices=["table", "csv", "json"])
    listing.set_defaults(func=cmd_list)


def _key_admin(settings: Settings) -> Any:
    from aimeter.keys_cli import key_admin  # noqa: PLC0415 - the Kafka client only when keys are touched

    return key_admin(settings)


def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    if not args.clear and args.rpm is None and args.tpm is None:
        raise ValueError("give --rpm and/or --tpm (or --clear)")
    wanted = RateLimit(rpm=args.rpm, tpm=args.tpm)  # validated: positive integers
    store = _key_admin(settings)
    record = store.load().get(args.key)
    if record is None or not record.active:
        raise ValueError(f"no active key with id {args.key!r} in {store.where()}; `aimeter keys list` shows them")
    limits = {k: v for k, v in record.limits.items() if k not in ("rpm", "tpm")}
    if not args.clear:
        limits.update(wanted.model_dump(exclude_none=True))
    store.put([replace(record, limits=limits)])
    what = "cleared" if args.clear else ", ".join(f"{k}={v}" for k, v in wanted.model_dump(exclude_none=True).items())
    print(f"rate limits of key {args.key} {what} in {store.where()}; gateways apply them as the record reaches them")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    path = args.config or settings.config
    config = (load_config(path).rate_limits if path is not None else None) or RateLimits()
    replicas = config.replicas
    rows: list[list[Any]] = []

    def row(scope: str, name: str, rpm: int | None, tpm: int | None, where: str) -> None:
        share = ", ".join(f"{label} {max(1, v // replicas)}" for label, v in (("rpm", rpm), ("tpm", tpm)) if v)
        rows.append([scope, name, rpm or "", tpm or "", share, where])

    for team, limit in config.teams.items():
        row("team", team, limit.rpm, limit.tpm, "config")
    for key_id, limit in config.keys.items():
        row("key", key_id, limit.rpm, limit.tpm, "config")
    if settings.auth == "keys":
        for record in _key_admin(settings).load().values():
            rpm, tpm = record.limits.get("rpm"), record.limits.get("tpm")
            if record.active and (rpm or tpm):
                row("key", record.key_id, rpm, tpm, "key store (wins)")
    print(render(["scope", "name", "rpm", "tpm", f"per replica (of {replicas})", "kept in"], rows, args.format))
    return 0
