"""`aimeter reconcile --provider openai|anthropic` (issue 19) against the fake admin APIs served by
`aimeter fake-upstream` (real HTTP on loopback) and the ledger in the real ClickHouse engine.

Every scenario starts from the same traffic through the gateway (the ledger): three requests, each
1,000 input tokens (200 of them cache reads) and 500 output tokens, priced by the overrides below at
$2 per 1M input, $1 per 1M cache read, $8 per 1M output:

    one request:   800 x 2/1M + 200 x 1/1M + 500 x 8/1M = 0.0016 + 0.0002 + 0.0040 = $0.0058
    three:         input 3,000 (cache read 600), output 1,500, $0.0174

OpenAI reports input_tokens with cached included, costs as a JSON number of USD. Anthropic reports
uncached_input_tokens (2,400 for three) apart from cache reads, and costs as decimal strings of cents
(0.0174 USD = "1.74", split here into lines of 0.48 + 0.06 + 1.2 cents). Each test says what the provider
billed on top and derives the expected drift by hand.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aimeter.cli import build_parser
from aimeter.config import parse_config
from aimeter.events import TokenUsage, UsageEvent
from aimeter.local.kafka import free_port
from aimeter.pricer.overrides_load import parse_overrides
from aimeter.pricer.pricebook import PriceBook
from aimeter.provider_books import cli as provider_cli
from aimeter.provider_books.fetch import AdminClient
from tests.integration.chdb_fixture import ingest

pytestmark = pytest.mark.integration

CONFIG = parse_config("""
backends:
  rec-openai:
    kind: openai
    base_url: "https://api.openai.com/v1"
    deployment: proprietary
    provider: openai
    account: {credential_id: key_recon_openai, project_id: proj_recon}
  rec-anthropic:
    kind: anthropic
    base_url: "https://api.anthropic.com"
    deployment: proprietary
    provider: anthropic
    account: {credential_id: key_recon_anthropic, workspace_id: wrkspc_recon}
models:
  recon-gpt: {backend: rec-openai}
  recon-embed: {backend: rec-openai}
  recon-claude: {backend: rec-anthropic}
""")
BOOK = PriceBook(CONFIG, parse_overrides("""
prices:
  - {provider: openai, model: recon-gpt, input: 2, cache_read: 1, output: 8}
  - {provider: openai, model: recon-embed, input: 1}
  - {provider: anthropic, model: recon-claude, input: 2, cache_read: 1, output: 8}
"""))
OPENAI_KEY = "sk-admin-recon-test-ZqX9"
ANTHROPIC_KEY = "sk-ant-admin01-recon-test-WvY8"
MODEL = {"openai": "recon-gpt", "anthropic": "recon-claude"}
SCOPE = {"openai": "proj_recon", "anthropic": "wrkspc_recon"}


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    """`aimeter fake-upstream` as its own process on a loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aimeter", "fake-upstream", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("fake upstream did not start") from None
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def seed_fake(base: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{base}/fake-admin/books", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5):
        pass


@dataclass(frozen=True)
class Use:
    """What the provider counted: provider-neutral, turned into each provider's record shape below."""

    at: datetime
    uncached: int
    cached: int
    output: int
    requests: int


def provider_usage(provider: str, uses: list[Use]) -> list[dict[str, Any]]:
    if provider == "openai":
        return [{"at": u.at.isoformat(), "model": MODEL[provider], "project_id": SCOPE[provider],
                 "api_key_id": "key_recon_openai", "input_tokens": u.uncached + u.cached,
                 "input_cached_tokens": u.cached, "output_tokens": u.output, "num_model_requests": u.requests}
                for u in uses]
    return [{"at": u.at.isoformat(), "model": MODEL[provider], "workspace_id": SCOPE[provider],
             "api_key_id": "key_recon_anthropic", "uncached_input_tokens": u.uncached,
             "cache_read_input_tokens": u.cached, "output_tokens": u.output,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}} for u in uses]


def provider_costs(provider: str, day: datetime, lines: list[str]) -> list[dict[str, Any]]:
    """``lines``: USD amounts as text. OpenAI: a JSON number each; Anthropic: cents as decimal strings."""
    if provider == "openai":
        return [{"at": day.isoformat(), "project_id": SCOPE[provider], "line_item": f"{MODEL[provider]}, input",
                 "amount": usd} for usd in lines]
    return [{"at": day.isoformat(), "workspace_id": SCOPE[provider], "model": MODEL[provider],
             "description": f"Claude recon, {i}", "token_type": "uncached_input_tokens", "cost_type": "tokens",
             "service_tier": "standard", "context_window": "0-200k", "amount": f"{Decimal(usd) * 100:f}"}
            for i, usd in enumerate(lines)]


def event(provider: str, name: str, at: datetime, *, unread: bool = False, recorded: bool = False) -> UsageEvent:
    backend = "rec-openai" if provider == "openai" else "rec-anthropic"
    usage = {} if unread else {"input_tokens": 1000, "cache_read_input_tokens": 200, "output_tokens": 500}
    return UsageEvent(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"aimeter-reconcile-test/{provider}/{name}"), started_at=at,
        ended_at=at + timedelta(milliseconds=50), api="openai.chat" if provider == "openai" else "anthropic.messages",
        backend=backend, provider=provider, deployment="proprietary", model_requested=MODEL[provider],
        model_served=MODEL[provider], stream=unread, status="ok", http_status=200,
        usage_source="none" if unread else "reported", usage=usage,
        attribution={"team": "recon", "project": "recon", "api_key_id": "gk-recon"},
        **({"credential_id": f"key_recon_{provider}", "upstream_project": SCOPE[provider]} if recorded else {}))


def base_traffic(store: Any, provider: str, day: datetime, name: str) -> None:
    ingest(store, [event(provider, f"{name}/{i}", day + timedelta(hours=10, minutes=m))
                   for i, m in enumerate((5, 20, 40))], BOOK)


def run(store: Any, fake: str, provider: str, day: datetime, tmp_path: Path, *extra: str,
        key: str | None = None, config: Any = CONFIG) -> tuple[int, str, str]:
    key_file = tmp_path / f"{provider}.key"
    key_file.write_text((key or (OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY)) + "\n")
    args = build_parser().parse_args([
        "reconcile", "--provider", provider, "--since", f"{day:%Y-%m-%d}", "--until",
        f"{day + timedelta(days=1):%Y-%m-%d}", "--admin-key-file", str(key_file), "--admin-base-url", fake,
        # The scenarios' bills are cents: a 1 % or $0.000001 allowance, not the default $0.01 (tested below).
        "--tolerance-usd", "0.000001", *extra])
    out, err = io.StringIO(), io.StringIO()
    status = provider_cli.run(args, store, lambda: store, config, {}, out=out, err=err, since=day,
                              until=day + timedelta(days=1), sleep=lambda _s: None,
                              now=datetime(2031, 1, 1, tzinfo=UTC))
    return status, out.getvalue(), err.getvalue()


def stored(store: Any, provider: str, day: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    result = store.query(
        "SELECT * FROM provider_reconciliation FINAL WHERE provider = {p:String} AND toDate(bucket_start) = {d:Date}",
        parameters={"p": provider, "d": day.date()})
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    return {(r["kind"], r["bucket_start"].strftime("%H")): r for r in rows}


def seed(fake: str, provider: str, day: datetime, uses: list[Use], cost_lines: list[str]) -> None:
    key = OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY
    seed_fake(fake, {provider: {"admin_key": key, "usage": provider_usage(provider, uses),
                                "costs": provider_costs(provider, day, cost_lines)}})


BASE_USE = Use(datetime.min.replace(tzinfo=UTC), 2400, 600, 1500, 3)
# The three requests' cost as the provider's cost lines: 0.0048 (uncached input) + 0.0006 (cache read) + 0.012.
BASE_LINES = ["0.0048", "0.0006", "0.012"]
PROVIDERS = ["openai", "anthropic"]


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exact_match_exits_zero_and_is_stored(metering_store, fake, tmp_path, provider):
    day = datetime(2031, 3, 2 if provider == "openai" else 3, tzinfo=UTC)
    base_traffic(metering_store, provider, day, "exact")
    seed(fake, provider, day, [Use(at(day, 10, 5), 2400, 600, 1500, 3)], BASE_LINES)
    status, out, err = run(metering_store, fake, provider, day, tmp_path)
    assert status == 0, out + err
    rows = stored(metering_store, provider, day)
    assert {k: r["classification"] for k, r in rows.items()} == {("usage", "00"): "match", ("cost", "00"): "match"}
    cost = rows[("cost", "00")]
    assert (cost["provider_usd"], cost["ledger_usd"]) == (Decimal("0.0174"), Decimal("0.0174"))
    assert (cost["provider_input_tokens"], cost["provider_cache_read_tokens"], cost["provider_output_tokens"]) == (
        3000, 600, 1500)
    assert cost["scope"] == SCOPE[provider]
    assert cost["model"] == ("*" if provider == "openai" else MODEL[provider])
    assert cost["provider_requests"] == (3 if provider == "openai" else None)
    assert "billed $0.0174, metered $0.0174" in out


@pytest.mark.parametrize("provider", PROVIDERS)
def test_traffic_that_bypassed_the_gateway(metering_store, fake, tmp_path, provider):
    # On top: 2 requests sent with the key directly, 1,000 input (none cached) + 500 output each:
    #   tokens 2,000 + 1,000 = 3,000 more; provider total 5,000 + 2,500 = 7,500; drift 3,000 = 40.00 %
    #   USD 2 x (1000 x 2/1M + 500 x 8/1M) = 2 x 0.006 = 0.012 more: provider 0.0294, drift 0.012 = 40.82 %
    day = datetime(2031, 3, 4 if provider == "openai" else 5, tzinfo=UTC)
    base_traffic(metering_store, provider, day, "bypass")
    seed(fake, provider, day, [Use(at(day, 10, 5), 2400, 600, 1500, 3), Use(at(day, 10, 30), 2000, 0, 1000, 2)],
         [*BASE_LINES, "0.012"])
    status, out, _ = run(metering_store, fake, provider, day, tmp_path)
    assert status == 1
    rows = stored(metering_store, provider, day)
    assert rows[("usage", "00")]["classification"] == "bypass"
    assert rows[("cost", "00")]["classification"] == "bypass"
    assert rows[("cost", "00")]["provider_usd"] == Decimal("0.0294")
    usage = rows[("usage", "00")]
    assert (usage["provider_input_tokens"], usage["ledger_input_tokens"]) == (5000, 3000)
    assert (usage["provider_output_tokens"], usage["ledger_output_tokens"]) == (2500, 1500)
    line = next(r for r in out.splitlines() if r.startswith("cost"))
    assert "+3000" in line
    assert "+40.00%" in line
    assert "+0.012" in line
    assert "+40.82%" in line
    if provider == "openai":
        assert (usage["provider_requests"], usage["ledger_requests"]) == (5, 3)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_wrong_price_override(metering_store, fake, tmp_path, provider):
    # Same tokens; the provider bills output at $12 per 1M where our override says $8:
    #   1,500 x 12/1M = 0.018, so 0.0048 + 0.0006 + 0.018 = 0.0234 billed vs 0.0174 metered:
    #   drift 0.006 = 25.64 % of the bill. Usage rows agree.
    day = datetime(2031, 3, 6 if provider == "openai" else 7, tzinfo=UTC)
    base_traffic(metering_store, provider, day, "price")
    seed(fake, provider, day, [Use(at(day, 10, 5), 2400, 600, 1500, 3)], ["0.0048", "0.0006", "0.018"])
    status, out, _ = run(metering_store, fake, provider, day, tmp_path)
    assert status == 1
    rows = stored(metering_store, provider, day)
    assert rows[("usage", "00")]["classification"] == "match"
    cost = rows[("cost", "00")]
    assert cost["classification"] == "price_table"
    assert cost["provider_usd"] - cost["ledger_usd"] == Decimal("0.006")
    assert "same tokens, provider billed $0.0234 and the ledger priced $0.0174" in cost["explanation"]
    assert "+25.64%" in next(r for r in out.splitlines() if r.startswith("cost"))
    # The tolerance is the user's: with $0.01 allowed (the default), a 0.6-cent drift passes; the re-run's
    # verdict replaces the stored one.
    status, out, _ = run(metering_store, fake, provider, day, tmp_path, "--tolerance-usd", "0.01")
    assert status == 0
    assert stored(metering_store, provider, day)[("cost", "00")]["classification"] == "match"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_missed_stream(metering_store, fake, tmp_path, provider):
    # A fourth request, a stream whose usage the gateway could not read (usage_source none, unmetered, 0 tokens).
    # The provider billed it like the others: 1,000 input (none cached) + 500 output, $0.006:
    #   provider 4,000 + 2,000 tokens, ledger 3,000 + 1,500: drift 1,500 = 25.00 %; USD 0.0234 vs 0.0174.
    day = datetime(2031, 3, 8 if provider == "openai" else 9, tzinfo=UTC)
    base_traffic(metering_store, provider, day, "missed")
    ingest(metering_store, [event(provider, "missed/stream", at(day, 10, 50), unread=True)], BOOK)
    seed(fake, provider, day, [Use(at(day, 10, 5), 2400, 600, 1500, 3), Use(at(day, 10, 50), 1000, 0, 500, 1)],
         [*BASE_LINES, "0.006"])
    status, out, _ = run(metering_store, fake, provider, day, tmp_path)
    assert status == 1
    rows = stored(metering_store, provider, day)
    for kind in ("usage", "cost"):
        assert rows[(kind, "00")]["classification"] == "unread_usage", rows[(kind, "00")]["explanation"]
        assert rows[(kind, "00")]["ledger_unread_requests"] == 1
    assert "1 answered requests had no readable usage" in rows[("usage", "00")]["explanation"]
    assert "+1500" in next(r for r in out.splitlines() if r.startswith("usage"))
    assert "+25.00%" in out
    if provider == "openai":  # the gateway did count the request: the same 4 on both sides
        assert (rows[("usage", "00")]["provider_requests"], rows[("usage", "00")]["ledger_requests"]) == (4, 4)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timing_at_a_bucket_edge(metering_store, fake, tmp_path, provider):
    # Hourly buckets. The ledger's third request started at 10:59:59.900 (hour 10); the provider put it in
    # hour 11. Hour 10: provider 2 requests (2,000 + 1,000 tokens) vs ledger 3 (4,500): -1,500;
    # hour 11: provider 1,500 vs ledger 0: +1,500. Together they agree, so both are bucket_edge and the
    # run exits 0; the daily cost row matches.
    day = datetime(2031, 3, 10 if provider == "openai" else 11, tzinfo=UTC)
    ingest(metering_store, [event(provider, "edge/0", at(day, 10, 5)), event(provider, "edge/1", at(day, 10, 20)),
                            event(provider, "edge/2", at(day, 10, 59) + timedelta(seconds=59, milliseconds=900))],
           BOOK)
    seed(fake, provider, day, [Use(at(day, 10, 5), 1600, 400, 1000, 2), Use(at(day, 11, 0), 800, 200, 500, 1)],
         BASE_LINES)
    status, out, err = run(metering_store, fake, provider, day, tmp_path, "--bucket", "1h")
    assert status == 0, out + err
    rows = stored(metering_store, provider, day)
    assert rows[("usage", "10")]["classification"] == "bucket_edge"
    assert rows[("usage", "11")]["classification"] == "bucket_edge"
    assert rows[("usage", "10")]["beyond_tolerance"] == 0
    assert rows[("cost", "00")]["classification"] == "match"
    assert "1500 tokens fall on the other side of the" in rows[("usage", "11")]["explanation"]


def test_paging_and_rate_limit_backoff(fake):
    # 8 days of hourly buckets = 192 buckets: OpenAI pages at 168 per page -> 2 completions pages, 2 embeddings
    # pages, 1 cost page. Two 429s first (retry-after: 0): 7 requests in all, and 2 sleeps of 0 s.
    day = datetime(2031, 4, 1, tzinfo=UTC)
    last = day + timedelta(days=7, hours=23)
    seed_fake(fake, {"openai": {"admin_key": OPENAI_KEY,
                                "usage": provider_usage("openai", [Use(day, 10, 0, 1, 1), Use(last, 20, 0, 2, 1)]),
                                "costs": []},
                     "rate_limit": {"openai": 2}})
    sleeps: list[float] = []
    client = AdminClient("openai", fake, {"Authorization": f"Bearer {OPENAI_KEY}"}, OPENAI_KEY, sleep=sleeps.append)
    usage, costs = provider_cli.pull("openai", client, provider_cli.Window(day, day + timedelta(days=8), "1h"),
                                     scoped=False)
    assert (client.requests, sleeps) == (7, [0.0, 0.0])
    assert sorted((k.bucket_start, f.input_tokens) for k, f in usage.rows.items()) == [(day, 10), (last, 20)]
    assert costs.rows == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_wrong_key_is_a_clear_error_and_nothing_secret_is_printed_or_stored(metering_store, fake, tmp_path,
                                                                              provider):
    day = datetime(2031, 3, 12 if provider == "openai" else 13, tzinfo=UTC)
    base_traffic(metering_store, provider, day, "wrongkey")
    seed(fake, provider, day, [Use(at(day, 10, 5), 2400, 600, 1500, 3)], BASE_LINES)
    wrong = "sk-proj-inference-not-admin-Kq7W" if provider == "openai" else "sk-ant-api03-inference-Kq7W"
    status, out, err = run(metering_store, fake, provider, day, tmp_path, key=wrong)
    assert status == 2
    assert "HTTP 401" in err
    assert "the admin key was refused" in err
    assert wrong not in out + err
    assert "Kq7W" not in out + err
    assert stored(metering_store, provider, day) == {}
    # A good run prints and stores no part of its key either.
    status, out, err = run(metering_store, fake, provider, day, tmp_path)
    key = OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY
    assert status == 0
    assert key not in out + err
    assert key[-4:] not in out + err
    dump = metering_store.query("SELECT * FROM provider_reconciliation").result_rows
    assert not any(key[-4:] in str(v) or "sk-" in str(v) for row in dump for v in row)


def test_empty_books_and_an_empty_ledger_are_no_drift(metering_store, fake, tmp_path):
    day = datetime(2031, 3, 20, tzinfo=UTC)
    seed_fake(fake, {"openai": {"admin_key": OPENAI_KEY, "usage": [], "costs": []}})
    status, out, err = run(metering_store, fake, "openai", day, tmp_path)
    assert status == 0, err
    assert "0 rows (no rows)" in out


def test_the_dashboard_panel_follows_the_backend_and_deployment_filters(metering_store):
    from tests.integration.dashboards_seed import seed as seed_dashboards  # noqa: PLC0415
    from tests.integration.provider_books_seed import seed_books  # noqa: PLC0415
    from tests.integration.test_dashboards_panels import SPEND  # noqa: PLC0415
    from tests.integration.test_dashboards_panels import run as run_panel  # noqa: PLC0415

    seed_dashboards(metering_store)
    seed_books(metering_store)
    title = "Metered vs billed per provider per day"
    # openai-dash is an OpenAI backend of the seeded ledger: only OpenAI's bill; self-hosted has no provider bill.
    assert {r[1] for r in run_panel(metering_store, SPEND, title, backend=("openai-dash",))} == {"openai"}
    assert run_panel(metering_store, SPEND, title, deployment=("self_hosted",)) == []
    assert {r[1] for r in run_panel(metering_store, SPEND, title)} == {"openai", "anthropic"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_ledger_groups_by_the_project_its_events_recorded(metering_store, fake, tmp_path, provider):
    # The events carry upstream_project themselves (migration 0009); the config passed declares no account at all.
    day = datetime(2031, 3, 14 if provider == "openai" else 15, tzinfo=UTC)
    ingest(metering_store, [event(provider, f"recorded/{i}", day + timedelta(hours=10, minutes=m), recorded=True)
                            for i, m in enumerate((5, 20, 40))], BOOK)
    seed(fake, provider, day, [Use(at(day, 10, 5), 2400, 600, 1500, 3)], BASE_LINES)
    bare = CONFIG.model_copy(update={"backends": {n: b.model_copy(update={"account": None})
                                                  for n, b in CONFIG.backends.items()}})
    status, out, err = run(metering_store, fake, provider, day, tmp_path, config=bare)
    assert status == 0, out + err
    rows = stored(metering_store, provider, day)
    assert {(k, r["scope"], r["classification"]) for k, r in rows.items()} == {
        (("usage", "00"), SCOPE[provider], "match"), (("cost", "00"), SCOPE[provider], "match")}


def test_openai_embeddings_come_from_their_own_usage_report(metering_store, fake, tmp_path):
    # Two embedding requests of 500 input tokens through the gateway, at $1 per 1M: 1,000 tokens, $0.001.
    # OpenAI reports them in /usage/embeddings, not /usage/completions; without it they would be ledger_over.
    day = datetime(2031, 3, 16, tzinfo=UTC)
    events = [event("openai", f"embed/{i}", at(day, 9, 10 * i)).model_copy(update={
        "api": "openai.embeddings", "model_requested": "recon-embed", "model_served": "recon-embed",
        "usage": TokenUsage(input_tokens=500)}) for i in range(2)]
    ingest(metering_store, events, BOOK)
    seed_fake(fake, {"openai": {"admin_key": OPENAI_KEY, "usage": [], "embeddings": [
        {"at": at(day, 9, 5).isoformat(), "model": "recon-embed", "project_id": SCOPE["openai"],
         "input_tokens": 1000, "num_model_requests": 2}],
        "costs": provider_costs("openai", day, ["0.001"])}})
    status, out, err = run(metering_store, fake, "openai", day, tmp_path)
    assert status == 0, out + err
    rows = stored(metering_store, "openai", day)
    usage = rows[("usage", "00")]
    assert (usage["model"], usage["provider_input_tokens"], usage["provider_requests"]) == ("recon-embed", 1000, 2)
    assert rows[("cost", "00")]["ledger_usd"] == Decimal("0.001")



def test_the_command_end_to_end_in_its_own_process(fake, tmp_path):
    """`aimeter reconcile --provider` as a user runs it: its own embedded store (migrated by the command when it
    stores), the gateway config from AIMETER_CONFIG, the key from a file. The provider billed 2 requests
    (1,000 + 100 tokens, $0.00021) that the empty ledger never saw: bypass, exit 1, stored."""
    day = datetime(2031, 5, 2, tzinfo=UTC)
    seed_fake(fake, {"openai": {"admin_key": OPENAI_KEY, "usage": [
        {"at": at(day, 10).isoformat(), "model": "recon-gpt", "project_id": "proj_recon", "input_tokens": 1000,
         "output_tokens": 100, "num_model_requests": 2}],
        "costs": [{"at": day.isoformat(), "project_id": "proj_recon", "amount": "0.00021"}]}})
    config = tmp_path / "aimeter.yaml"
    config.write_text("""
backends:
  rec-openai:
    kind: openai
    base_url: "https://api.openai.com/v1"
    deployment: proprietary
    provider: openai
    account: {credential_id: key_recon_openai, project_id: proj_recon}
models:
  recon-gpt: {backend: rec-openai}
""")
    key_file = tmp_path / "admin.key"
    key_file.write_text(OPENAI_KEY)
    env = {**os.environ, "AIMETER_DATA_DIR": str(tmp_path / "data"), "AIMETER_CONFIG": str(config),
           "AIMETER_QUERY_PORT": str(free_port())}
    env.pop("AIMETER_CLICKHOUSE_URL", None)
    assert subprocess.run([sys.executable, "-m", "aimeter", "migrate"], env=env, capture_output=True,
                          timeout=120, check=False).returncode == 0
    done = subprocess.run([sys.executable, "-m", "aimeter", "reconcile", "--provider", "openai", "--since",
                           f"{day:%Y-%m-%d}", "--until", f"{day + timedelta(days=1):%Y-%m-%d}", "--admin-key-file",
                           str(key_file), "--admin-base-url", fake], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("usage", "cost"))]
    assert [line.split()[:4] for line in lines] == [["usage", "2031-05-02", "recon-gpt", "proj_recon"],
                                                    ["cost", "2031-05-02", "*", "proj_recon"]]
    assert all("bypass" in line for line in lines)
    assert "billed $0.00021, metered $0" in done.stdout
    assert "stored as run" in done.stdout
    assert OPENAI_KEY not in done.stdout + done.stderr
