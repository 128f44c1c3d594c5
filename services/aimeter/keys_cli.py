"""``aimeter keys create|list|revoke``: manage gateway-issued virtual keys in the key file."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime

from aimeter.events import Attribution
from aimeter.gateway.keys import KeyFile, new_key
from aimeter.reports.format import render
from aimeter.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke gateway API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="issue a key (printed once; only its hash is stored)")
    create.add_argument("--team", required=True)
    create.add_argument("--project", default="")
    create.add_argument("--user", default="")
    create.set_defaults(func=cmd_create)
    actions.add_parser("list", help="list keys (ids and attribution, never secrets)").set_defaults(func=cmd_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id; gateways stop accepting it within a second")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_revoke)


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    Attribution(team=args.team, project=args.project, user=args.user)  # same bounds as events; raises clearly
    store = KeyFile(settings.resolved_keys_file)
    records = store.load()
    key, record = new_key(args.team, args.project, args.user, datetime.now(UTC))
    records[record.key_id] = record
    store.save(records)
    print(key)
    print(f"key id {record.key_id} for team={args.team} project={args.project or '-'}: store it now, "
          f"it cannot be shown again ({store.path})", flush=True)
    return 0


def cmd_list(_args: argparse.Namespace, settings: Settings) -> int:
    records = KeyFile(settings.resolved_keys_file).load()
    rows = [[r.key_id, r.team, r.project, r.user, r.created_at[:19], _status(r.revoked_at)]
            for r in records.values()]
    print(render(["key_id", "team", "project", "user", "created", "status"], rows))
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    store = KeyFile(settings.resolved_keys_file)
    records = store.load()
    if args.key_id not in records:
        raise ValueError(f"no key with id {args.key_id!r} in {store.path}")
    records[args.key_id] = replace(records[args.key_id], revoked_at=datetime.now(UTC).isoformat())
    store.save(records)
    print(f"revoked {args.key_id}")
    return 0


def _status(revoked_at: str) -> str:
    """A word first, so a revoked key never reads like a plain timestamp."""
    return f"revoked {revoked_at[:19]}" if revoked_at else "active"
