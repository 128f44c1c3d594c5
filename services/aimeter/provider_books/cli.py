"""``aimeter reconcile --provider openai|anthropic``: pull the provider's usage and cost reports, compare them
with the ledger, print the drift table, store it in ``provider_reconciliation``, exit 1 beyond tolerance.

The admin key is read from ``--admin-key-file`` (or the provider's conventional ``OPENAI_ADMIN_KEY`` /
``ANTHROPIC_ADMIN_KEY``), sent only in a request header, and never printed, logged or stored."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import TextIO

from clickhouse_connect.driver.client import Client

from aimeter.config import GatewayConfig
from aimeter.provider_books import anthropic_books, ledger, openai_books
from aimeter.provider_books.books import BUCKETS, Book, ceil_bucket, floor_bucket
from aimeter.provider_books.compare import Drift, Tolerance, exit_status, pct, reconcile
from aimeter.provider_books.fetch import AdminApiError, AdminClient, Sleep
from aimeter.reports.format import render

PROVIDERS: dict[str, ModuleType] = {"openai": openai_books, "anthropic": anthropic_books}
KEY_ENV = {"openai": "OPENAI_ADMIN_KEY", "anthropic": "ANTHROPIC_ADMIN_KEY"}
HEADERS = ["kind", "bucket", "model", "scope", "tokens provider", "tokens ledger", "drift", "drift %",
           "requests p/l", "usd provider", "usd ledger", "usd drift", "usd %", "class", "explanation"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provider books (--provider): compare with the provider's usage and cost reports")
    g.add_argument("--provider", choices=sorted(PROVIDERS), help="reconcile with this provider's admin API")
    g.add_argument("--bucket", choices=sorted(BUCKETS), default="1d", help="usage bucket width (cost is daily)")
    g.add_argument("--admin-key-file", type=Path,
                   help="file holding the organization Admin key (default: $OPENAI_ADMIN_KEY / $ANTHROPIC_ADMIN_KEY)")
    g.add_argument("--admin-base-url", help="admin API base URL (default: the provider's; a fake in tests)")
    g.add_argument("--config", type=Path, help="gateway config: backends' `account` ids group the ledger")
    g.add_argument("--backend", action="append", default=[], help="only these backends of the ledger (repeat)")
    g.add_argument("--tolerance-pct", type=Decimal, default=Decimal(1), help="allowed drift, %% of the provider's")
    g.add_argument("--tolerance-tokens", type=int, default=0, help="allowed absolute token drift per class")
    g.add_argument("--tolerance-usd", type=Decimal, default=Decimal("0.01"), help="allowed absolute USD drift")
    g.add_argument("--no-store", action="store_true", help="print only; do not write provider_reconciliation")


def read_admin_key(provider: str, path: Path | None, environ: dict[str, str]) -> str:
    """The key, stripped; errors name the file or variable, never the content."""
    if path is not None:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read --admin-key-file {path}: {exc.strerror}") from None
        if not key:
            raise ValueError(f"--admin-key-file {path} is empty")
        return key
    key = environ.get(KEY_ENV[provider], "").strip()
    if not key:
        raise ValueError(f"no admin key: pass --admin-key-file FILE or set {KEY_ENV[provider]}")
    return key


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    width: str

    @classmethod
    def of(cls, since: datetime, until: datetime, width: str) -> Window:
        """Widened to whole buckets (providers snap buckets to UTC boundaries); cost rows need whole days."""
        since, until = floor_bucket(since, "1d"), ceil_bucket(until, "1d")
        if until <= since:
            raise ValueError(f"--until ({until:%Y-%m-%d %H:%M}) must be after --since ({since:%Y-%m-%d %H:%M})")
        return cls(since, until, width)


def pull(provider: str, client: AdminClient, window: Window, scoped: bool) -> tuple[Book, Book]:
    """The provider's usage (at the window's width) and daily cost, every page."""
    books = PROVIDERS[provider]
    usage, costs = Book(), Book()
    params = books.usage_params(window.since, window.until, window.width, scoped)
    for path in books.USAGE_PATHS:
        for page in client.pages(path, params, books.next_page):
            for key, figures in books.usage_rows(page, scoped):
                usage.add(key, figures)
    for page in client.pages(books.COSTS_PATH, books.cost_params(window.since, window.until, scoped),
                             books.next_page):
        for key, figures in books.cost_rows(page, scoped):
            costs.add(key, figures)
    return usage, costs


def read_ledger(client: Client, provider: str, window: Window, config: GatewayConfig | None,
                backends: list[str]) -> tuple[Book, bool]:
    scope_of = ledger.scopes(config, provider)
    usage_sql, cost_sql = ledger.queries(window.width)
    params = ledger.parameters(provider, window.since, window.until, backends)
    usage = client.query(usage_sql, parameters=params).result_rows
    costs = client.query(cost_sql, parameters=params).result_rows
    scoped = ledger.is_scoped(scope_of, usage)
    return ledger.ledger_book(usage, costs, scope_of, scoped), scoped


def _num(value: int | Decimal | None) -> str:
    """Exact, without trailing zeros (the ledger's Decimal(38, 12) next to the provider's shorter figure)."""
    if value is None:
        return "-"
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


def _signed(value: Decimal) -> str:
    return ("+" if value >= 0 else "") + _num(value)


def _pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


def table_rows(rows: list[Drift]) -> list[list[str]]:
    out = []
    for d in rows:
        p, led = d.provider, d.ledger
        fmt = "%Y-%m-%d" if d.width == "1d" else "%Y-%m-%d %H:00"
        cost = d.kind == "cost"
        out.append([d.kind, d.key.bucket_start.strftime(fmt), d.key.model, d.key.scope or "(default)",
                    str(p.tokens), str(led.tokens), f"{d.token_drift:+d}", _pct(pct(p.tokens, led.tokens)),
                    f"{_num(p.requests)}/{_num(led.requests)}",
                    _num(p.usd) if cost else "", _num(led.usd) if cost else "",
                    _signed(d.usd_drift) if cost and d.usd_drift is not None else "",
                    _pct(pct(p.usd, led.usd)) if cost else "", d.classification, d.explanation])
    return out


def summary(provider: str, rows: list[Drift], tol: Tolerance) -> str:
    counts: dict[str, int] = {}
    for d in rows:
        counts[d.classification] = counts.get(d.classification, 0) + 1
    billed = sum((d.provider.usd or Decimal(0) for d in rows if d.kind == "cost"), Decimal(0))
    metered = sum((d.ledger.usd or Decimal(0) for d in rows if d.kind == "cost"), Decimal(0))
    beyond = sum(1 for d in rows if d.beyond)
    classes = ", ".join(f"{n} {c}" for c, n in sorted(counts.items())) or "no rows"
    return (f"{provider}: billed ${_num(billed)}, metered ${_num(metered)}, drift ${_signed(billed - metered)}; "
            f"{len(rows)} rows "
            f"({classes}); {beyond} beyond tolerance ({tol.pct}% or {tol.tokens} tokens / ${tol.usd})")


def run(args: argparse.Namespace, reader: Client, writer: Callable[[], Client] | None, config: GatewayConfig | None,
        environ: dict[str, str], *, out: TextIO = sys.stdout, err: TextIO = sys.stderr, now: datetime | None = None,
        since: datetime, until: datetime, sleep: Sleep | None = None) -> int:
    """One reconciliation: pull, compare, print, store. Returns the exit status (1 beyond tolerance)."""
    provider = args.provider
    books = PROVIDERS[provider]
    window = Window.of(since, until, args.bucket)
    key = read_admin_key(provider, args.admin_key_file, environ)
    client = AdminClient(provider, args.admin_base_url or books.DEFAULT_BASE_URL, books.auth_headers(key), key,
                         sleep=sleep or time.sleep)
    led, scoped = read_ledger(reader, provider, window, config, args.backend)
    try:
        usage, costs = pull(provider, client, window, scoped)
    except AdminApiError as exc:
        print(f"aimeter reconcile: {exc}", file=err)
        return 2
    tol = Tolerance(args.tolerance_pct, args.tolerance_tokens, args.tolerance_usd)
    rows = reconcile(usage, costs, led, window.width, cost_by_model=provider == "anthropic", tol=tol)
    print(f"{provider} books vs ledger, {window.since:%Y-%m-%d %H:%M} .. {window.until:%Y-%m-%d %H:%M} UTC, "
          f"usage per {window.width} (cost per day); drift = provider - ledger, % of the provider's figure", file=out)
    print(render(HEADERS, table_rows(rows)), file=out)
    print(summary(provider, rows, tol), file=out)
    if writer is not None and not args.no_store:
        from aimeter.provider_books.store import store  # noqa: PLC0415
        from aimeter.reprice import StoreBusyError  # noqa: PLC0415

        try:
            run_id = store(writer(), provider, rows, now or datetime.now(UTC))
            print(f"stored as run {run_id} in provider_reconciliation", file=out)
        except StoreBusyError as exc:  # the table above stands; storing needs the store to itself
            print(f"aimeter reconcile: not stored in provider_reconciliation: {exc}", file=err)
    return exit_status(rows)


def environ() -> dict[str, str]:
    return {k: os.environ[k] for k in KEY_ENV.values() if k in os.environ}
