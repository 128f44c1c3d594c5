"""``aimeter demo --gateway-url URL``: the demo traffic of ``aimeter up --demo``, against a running gateway.

docker-compose.yml's ``demo`` profile runs it beside the stack: it issues one key per demo team into
the gateway's key file (a shared volume; gateways reload it within a second), then sends the same
synthetic traffic through the gateway with the official openai SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aimeter.settings import Settings

KEY_RELOAD_S = 1.5  # gateways re-read the key file every second


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="send demo traffic (4 teams, 3 models) through a running gateway")
    demo.add_argument("--gateway-url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    demo.add_argument("--seconds", type=float, default=30.0)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.local.demo import issue_demo_keys, revoke_demo_keys, run_traffic  # noqa: PLC0415 - openai SDK

    keys = issue_demo_keys(settings.resolved_keys_file) if settings.auth == "keys" else {}
    if keys:
        time.sleep(KEY_RELOAD_S)
    try:
        stats = asyncio.run(run_traffic(args.gateway_url.rstrip("/"), keys, args.seconds, args.concurrency))
    finally:
        revoked = revoke_demo_keys(settings.resolved_keys_file, keys)  # no demo key stays active
    if revoked:
        print(f"demo: revoked the {revoked} gateway keys it made", flush=True)
    for sample in stats.error_samples:
        print(f"demo: error sample: {sample}")
    print(f"demo: sent {stats.sent}, ok {stats.ok}, errors {stats.errors}", flush=True)
    return 0 if stats.errors == 0 else 1
