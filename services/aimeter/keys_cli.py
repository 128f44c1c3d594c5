"""``aimeter keys create|list|revoke|import``: manage gateway-issued virtual keys.

With ``AIMETER_KEYS_STORE=kafka`` (the default) the store is the compacted topic ``ai.keys.v1``: each
command writes with acks=all and returns once Kafka acknowledged, and every gateway applies the record
within a fraction of a second. ``import`` moves a ``keys.json`` (the earlier file store) into the topic.
With ``file`` the commands edit the key file, as before.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from aimeter.events import Attribution
from aimeter.gateway.keys import KeyAdmin, KeyFile, KeyRecord, KeyRecordError, encode_record, new_key
from aimeter.gateway.keys_kafka import KeysTopic
from aimeter.reports.format import render
from aimeter.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list, revoke and import gateway API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="issue a key (printed once; only its hash is stored)")
    create.add_argument("--team", required=True)
    create.add_argument("--project", default="")
    create.add_argument("--user", default="")
    create.set_defaults(func=cmd_create)
    actions.add_parser("list", help="list keys (ids and attribution, never secrets)").set_defaults(func=cmd_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id; every gateway refuses it within a second")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_revoke)
    imp = actions.add_parser("import", help="copy a keys.json file store into the Kafka topic (idempotent)")
    imp.add_argument("file", nargs="?", type=Path, help="default: AIMETER_KEYS_FILE or <data dir>/keys.json")
    imp.set_defaults(func=cmd_import)


def key_admin(settings: Settings, bootstrap: str | None = None) -> KeyAdmin:
    """Where ``aimeter keys`` (and the demo) read and write keys, per AIMETER_KEYS_STORE; the topic is on
    ``bootstrap``, else AIMETER_KAFKA_BOOTSTRAP, else the local broker (127.0.0.1:AIMETER_KAFKA_PORT)."""
    if settings.keys_store == "file":
        return KeyFile(settings.resolved_keys_file)
    return KeysTopic(bootstrap or settings.kafka_bootstrap or f"127.0.0.1:{settings.kafka_port}",
                     partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor)


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    Attribution(team=args.team, project=args.project, user=args.user)  # same bounds as events; raises clearly
    store = key_admin(settings)
    key, record = new_key(args.team, args.project, args.user, datetime.now(UTC))
    store.put([record])
    print(key)
    print(f"key id {record.key_id} for team={args.team} project={args.project or '-'}: store it now, "
          f"it cannot be shown again ({store.where()})", flush=True)
    return 0


def cmd_list(_args: argparse.Namespace, settings: Settings) -> int:
    records = key_admin(settings).load()
    rows = [[r.key_id, r.team, r.project, r.user, r.created_at[:19], _status(r.revoked_at)]
            for r in sorted(records.values(), key=lambda r: (r.created_at, r.key_id))]
    print(render(["key_id", "team", "project", "user", "created", "status"], rows))
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    store = key_admin(settings)
    record = store.load().get(args.key_id)
    if record is None:
        raise ValueError(f"no key with id {args.key_id!r} in {store.where()}; `aimeter keys list` shows the ids")
    if not record.active:
        print(f"{args.key_id} was already revoked at {record.revoked_at}")
        return 0
    store.put([replace(record, revoked_at=datetime.now(UTC).isoformat())])
    print(f"revoked {args.key_id}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    if settings.keys_store == "file":
        raise ValueError("AIMETER_KEYS_STORE=file: the key file is already the store; import moves a key file "
                         "into the Kafka topic (AIMETER_KEYS_STORE=kafka)")
    source = KeyFile(args.file or settings.resolved_keys_file)
    if not source.path.is_file():
        raise ValueError(f"no key file at {source.path}: name the keys.json to import")
    wanted = source.load()
    store = key_admin(settings)
    plan = import_plan(wanted, store.load())
    store.put(plan.write)
    print(f"import {source.path} -> {store.where()}: {len(plan.write)} written, {plan.present} already present, "
          f"{plan.kept_revoked} kept revoked (revoked in the topic, active in the file)", flush=True)
    return 0


class ImportPlan:
    """What ``import`` writes: file records that are new or differ, except that a revocation is final."""

    def __init__(self) -> None:
        self.write: list[KeyRecord] = []
        self.present = 0
        self.kept_revoked = 0


def import_plan(wanted: dict[str, KeyRecord], current: dict[str, KeyRecord]) -> ImportPlan:
    plan = ImportPlan()
    for key_id, record in sorted(wanted.items()):
        try:
            encode_record(record)  # a record a gateway would refuse fails the whole import here, naming it
        except KeyRecordError as exc:
            raise ValueError(f"key {key_id!r} in the file cannot be imported ({exc}); nothing was written") from None
        have = current.get(key_id)
        if have == record:
            plan.present += 1
        elif have is not None and not have.active and record.active:
            plan.kept_revoked += 1
        else:
            plan.write.append(record)
    return plan


def _status(revoked_at: str) -> str:
    """A word first, so a revoked key never reads like a plain timestamp."""
    return f"revoked {revoked_at[:19]}" if revoked_at else "active"
