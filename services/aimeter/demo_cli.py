"""``aimeter demo --gateway-url URL``: the demo traffic of ``aimeter up --demo``, against a running gateway.

docker-compose.yml's ``demo`` profile runs it beside the stack: it issues one key per demo team into
the key store (the Kafka topic ai.keys.v1, or the key file with AIMETER_KEYS_STORE=file), waits until the
gateway accepts them, then sends the same synthetic traffic through the gateway with the official openai SDK.
"""

from __future__ import annotations

import argparse
import asyncio

from aimeter.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="send demo traffic (4 teams, 3 models) through a running gateway")
    demo.add_argument("--gateway-url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    demo.add_argument("--seconds", type=float, default=30.0)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.keys_cli import key_admin  # noqa: PLC0415 - keep CLI start fast
    from aimeter.local.demo import (  # noqa: PLC0415 - the openai SDK
        issue_demo_keys,
        revoke_demo_keys,
        run_traffic,
        wait_until_accepted,
    )

    store = key_admin(settings)
    base_url = args.gateway_url.rstrip("/")
    keys = issue_demo_keys(store) if settings.auth == "keys" else {}
    try:
        try:
            wait_until_accepted(base_url, keys)
        except TimeoutError as exc:  # the traffic below then counts the failures and sets the exit code
            print(f"demo: {exc}; sending anyway", flush=True)
        stats = asyncio.run(run_traffic(base_url, keys, args.seconds, args.concurrency))
    finally:
        revoked = revoke_demo_keys(store, keys)  # no demo key stays active
    if revoked:
        print(f"demo: revoked the {revoked} gateway keys it made", flush=True)
    for sample in stats.error_samples:
        print(f"demo: error sample: {sample}")
    print(f"demo: sent {stats.sent}, ok {stats.ok}, errors {stats.errors}", flush=True)
    return 0 if stats.errors == 0 else 1
