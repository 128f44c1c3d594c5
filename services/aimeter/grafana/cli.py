"""``aimeter dashboards build [--check]`` and ``aimeter grafana push``: the dashboards' commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aimeter.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboards = sub.add_parser("dashboards", help="Grafana dashboards as code")
    actions = dashboards.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="regenerate dashboards/json/*.json from services/aimeter/grafana/")
    build.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    build.set_defaults(func=cmd_build)
    grafana = sub.add_parser("grafana", help="talk to a Grafana server")
    grafana_actions = grafana.add_subparsers(dest="action", required=True)
    push = grafana_actions.add_parser("push", help="create or update the folder, datasource and dashboards")
    push.add_argument("--url", required=True, help="Grafana base URL, e.g. http://localhost:3000")
    token = push.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="service account token (visible to `ps`: prefer --token-file)")
    token.add_argument("--token-file", type=Path, help="file holding the service account token")
    push.add_argument("--clickhouse-url", help="ClickHouse as Grafana reaches it, http(s)://user:pass@host:port/db "
                                               "(default: AIMETER_CLICKHOUSE_URL with AIMETER_CLICKHOUSE_USER and "
                                               "AIMETER_CLICKHOUSE_PASSWORD[_FILE])")
    push.add_argument("--prometheus-url", help="Prometheus as Grafana reaches it, e.g. http://prometheus:9090: creates "
                                               "the datasource of the Gateway health dashboard (uid aimeter-prometheus)"
                                               "; without it that datasource is left as it is")
    push.add_argument("--rotate-password", action="store_true",
                      help="send the ClickHouse password even if Grafana holds one (after rotating it): Grafana "
                           "never returns a stored password, so a plain push cannot tell it changed")
    push.set_defaults(func=cmd_push)


def cmd_build(args: argparse.Namespace, _settings: Settings) -> int:
    from aimeter.grafana.build import JSON_DIR, stale, write  # noqa: PLC0415 - keep CLI start fast

    if args.check:
        wrong = stale()
        for path in wrong:
            print(f"{path} is out of date: run `aimeter dashboards build`", file=sys.stderr)
        if not wrong:
            print(f"{JSON_DIR} is up to date")
        return 1 if wrong else 0
    for path in write():
        print(f"wrote {path}")
    return 0


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    from grafana_client import GrafanaApi  # noqa: PLC0415
    from grafana_client.client import GrafanaException  # noqa: PLC0415

    from aimeter.grafana.prometheus import prometheus_datasource  # noqa: PLC0415
    from aimeter.grafana.push import clickhouse_variables, datasource_definition, push  # noqa: PLC0415

    # Default: the configured server with AIMETER_CLICKHOUSE_USER / _PASSWORD / _PASSWORD_FILE, when set.
    clickhouse_url = args.clickhouse_url or (settings.resolved_clickhouse_url if settings.clickhouse_url else None)
    if not clickhouse_url or clickhouse_url.startswith("chdb:"):
        raise ValueError("Grafana needs a ClickHouse server: pass --clickhouse-url http://user:pass@host:8123/db")
    token = args.token or args.token_file.read_text(encoding="utf-8").strip()
    extra = (prometheus_datasource(args.prometheus_url),) if args.prometheus_url else ()
    api = GrafanaApi.from_url(args.url, credential=token)
    try:
        report = push(api, datasource_definition(clickhouse_variables(clickhouse_url)),
                      rotate_password=args.rotate_password, extra_datasources=extra)
    except GrafanaException as exc:
        print(f"aimeter grafana push: {args.url} answered {exc.status_code or 'nothing'}: {exc.message}; "
              "nothing after that was written (run it again once fixed: it is idempotent)", file=sys.stderr)
        return 1
    for name, action in report.actions.items():
        print(f"{action:9}  {name}")
    print(f"grafana push: {report.writes} write(s) to {args.url}")
    return 0
