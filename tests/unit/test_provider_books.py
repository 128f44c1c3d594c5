"""The pure core of `aimeter reconcile --provider` (issue 19): the providers' documented shapes parsed into the
ledger's token semantics, exact money, the drift classes with hand-derived figures, and no secret in errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from aimeter.config import ConfigError, parse_config
from aimeter.provider_books import anthropic_books, openai_books
from aimeter.provider_books.books import ALL, NON_TOKEN, Book, Figures, Key, ceil_bucket, floor_bucket
from aimeter.provider_books.cli import Window, read_admin_key
from aimeter.provider_books.compare import Tolerance, classify, exit_status, pct, reconcile
from aimeter.provider_books.fetch import AdminClient, scrub
from aimeter.provider_books.ledger import is_scoped, ledger_book, queries, scopes

DAY = datetime(2026, 11, 2, tzinfo=UTC)
TOL = Tolerance()

# OpenAI's documented example page (API reference, "Completions" usage object), with audio and a null bucket.
OPENAI_USAGE = """{"object": "page", "data": [
  {"object": "bucket", "start_time": 1730419200, "end_time": 1730505600, "results": [
    {"object": "organization.usage.completions.result", "input_tokens": 5000, "output_tokens": 1000,
     "input_cached_tokens": 4000, "input_audio_tokens": 300, "output_audio_tokens": 20, "num_model_requests": 5,
     "project_id": "proj_abc", "user_id": null, "api_key_id": null, "model": "gpt-4o-mini-2024-07-18",
     "batch": null, "service_tier": null},
    {"object": "organization.usage.completions.result", "input_tokens": 10, "output_tokens": 1,
     "input_cached_tokens": 0, "num_model_requests": 1, "project_id": null, "model": "gpt-4o-mini-2024-07-18"}]},
  {"object": "bucket", "start_time": 1730505600, "end_time": 1730592000, "results": []}],
 "has_more": true, "next_page": "page_AAAAAGdGxdEiJdKOAAAAAGcqsYA="}"""
OPENAI_COSTS = """{"object": "page", "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
  "results": [{"object": "organization.costs.result", "amount": {"value": 0.06, "currency": "usd"},
               "line_item": null, "project_id": null},
              {"object": "organization.costs.result", "amount": {"value": 0.1, "currency": "usd"},
               "line_item": "Image models", "project_id": "proj_abc"}]}], "has_more": false, "next_page": null}"""
# Anthropic's documented example (Get Messages Usage Report / Get Cost Report).
ANTHROPIC_USAGE = """{"data": [{"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
  "results": [{"uncached_input_tokens": 1500, "cache_creation": {"ephemeral_1h_input_tokens": 1000,
               "ephemeral_5m_input_tokens": 500}, "cache_read_input_tokens": 200, "output_tokens": 500,
               "server_tool_use": {"web_search_requests": 10}, "api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
               "workspace_id": null, "model": "claude-sonnet-4-20250514", "service_tier": "standard",
               "context_window": "0-200k"}]}], "has_more": false, "next_page": null}"""
ANTHROPIC_COSTS = """{"data": [{"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
  "results": [{"amount": "123.45", "currency": "USD", "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
               "description": "Claude Sonnet 4 Usage - Input Tokens", "cost_type": "tokens",
               "context_window": "0-200k", "model": "claude-sonnet-4-20250514", "service_tier": "standard",
               "token_type": "uncached_input_tokens"},
              {"amount": "1000", "currency": "USD", "workspace_id": null, "description": "Web Search Usage",
               "cost_type": "web_search", "context_window": null, "model": null, "service_tier": null,
               "token_type": null}]}], "has_more": true, "next_page": "page_MjAyNS0wNS0xNFQwMDowMFo="}"""


def page(text: str) -> dict:
    return json.loads(text, parse_float=Decimal)  # as the adapter reads it: no float ever


def test_openai_usage_counts_audio_and_keeps_cached_inside_input():
    rows = openai_books.usage_rows(page(OPENAI_USAGE), scoped=True)
    start = datetime(2024, 11, 1, tzinfo=UTC)
    assert rows == [
        (Key(start, "gpt-4o-mini-2024-07-18", "proj_abc"),
         Figures(input_tokens=5300, cache_read_tokens=4000, output_tokens=1020, requests=5)),
        (Key(start, "gpt-4o-mini-2024-07-18", ""), Figures(input_tokens=10, output_tokens=1, requests=1)),
    ]  # the empty second bucket adds nothing; a null project is the '' scope
    assert {k.scope for k, _ in openai_books.usage_rows(page(OPENAI_USAGE), scoped=False)} == {ALL}
    assert openai_books.next_page(page(OPENAI_USAGE)) == "page_AAAAAGdGxdEiJdKOAAAAAGcqsYA="


def test_openai_embeddings_rows_have_input_and_requests_only():
    # OpenAI's documented embeddings example: 16 input tokens, 2 requests, every grouping field null.
    body = page("""{"object": "page", "data": [{"object": "bucket", "start_time": 1730419200,
      "end_time": 1730505600, "results": [{"object": "organization.usage.embeddings.result", "input_tokens": 16,
      "num_model_requests": 2, "project_id": null, "user_id": null, "api_key_id": null, "model": null}]}],
      "has_more": false, "next_page": null}""")
    [(key, figures)] = openai_books.usage_rows(body, scoped=False)
    assert (key.model, figures) == ("", Figures(input_tokens=16, requests=2))
    assert openai_books.EMBEDDINGS_PATH in openai_books.USAGE_PATHS


def test_openai_cost_is_an_exact_decimal_of_usd():
    rows = openai_books.cost_rows(page(OPENAI_COSTS), scoped=True)
    assert [(k.scope, k.model, f.usd) for k, f in rows] == [("", ALL, Decimal("0.06")), ("proj_abc", ALL,
                                                                                          Decimal("0.1"))]
    assert openai_books.next_page(page(OPENAI_COSTS)) is None
    bad = page(OPENAI_COSTS)
    bad["data"][0]["results"][0]["amount"]["currency"] = "eur"
    with pytest.raises(ValueError, match="expected usd"):
        openai_books.cost_rows(bad, scoped=True)


def test_anthropic_usage_sums_its_disjoint_input_classes():
    # 1,500 uncached + 200 cache read + 500 (5 min) + 1,000 (1 h) cache writes = 3,200 input tokens.
    [(key, figures)] = anthropic_books.usage_rows(page(ANTHROPIC_USAGE), scoped=True)
    assert key == Key(datetime(2025, 8, 1, tzinfo=UTC), "claude-sonnet-4-20250514", "")  # null: default workspace
    assert figures == Figures(input_tokens=3200, cache_read_tokens=200, cache_write_tokens=1500, output_tokens=500)
    assert figures.requests is None  # the usage report counts no requests


def test_anthropic_cost_is_cents_as_a_decimal_string():
    rows = anthropic_books.cost_rows(page(ANTHROPIC_COSTS), scoped=True)
    # "123.45" cents is $1.2345 (the documentation: "123.45" in "USD" represents $1.23, rounded).
    assert [(k.model, k.scope, f.usd) for k, f in rows] == [
        ("claude-sonnet-4-20250514", "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ", Decimal("1.2345")),
        (NON_TOKEN, "", Decimal("10"))]
    assert anthropic_books.next_page(page(ANTHROPIC_COSTS)) == "page_MjAyNS0wNS0xNFQwMDowMFo="


def test_query_parameters_follow_each_providers_spelling():
    since, until = DAY, DAY + timedelta(days=1)
    assert openai_books.usage_params(since, until, "1h", scoped=True) == [
        ("start_time", str(int(since.timestamp()))), ("end_time", str(int(until.timestamp()))),
        ("bucket_width", "1h"), ("limit", "168"), ("group_by", "model"), ("group_by", "project_id")]
    assert ("bucket_width", "1d") in openai_books.cost_params(since, until, scoped=False)
    assert anthropic_books.usage_params(since, until, "1d", scoped=True) == [
        ("starting_at", "2026-11-02T00:00:00Z"), ("ending_at", "2026-11-03T00:00:00Z"), ("bucket_width", "1d"),
        ("limit", "31"), ("group_by[]", "model"), ("group_by[]", "workspace_id")]
    assert ("group_by[]", "description") in anthropic_books.cost_params(since, until, scoped=False)
    assert anthropic_books.auth_headers("k") == {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert openai_books.auth_headers("k") == {"Authorization": "Bearer k"}


def key(hour: int = 0, model: str = "m") -> Key:
    return Key(DAY + timedelta(hours=hour), model, ALL)


def test_the_classes_from_hand_figures():
    base = Figures(1000, 200, 0, 500, 3)
    assert classify("usage", key(), base, base, TOL) == ("match", "within tolerance")
    # Same tokens, $0.0234 billed vs $0.0174 priced: the price table.
    cls, text = classify("cost", key(), Figures(1000, 200, 0, 500, 3, Decimal("0.0234")),
                         Figures(1000, 200, 0, 500, 3, Decimal("0.0174")), Tolerance(usd=Decimal(0)))
    assert cls == "price_table"
    assert "provider billed $0.0234 and the ledger priced $0.0174" in text
    # Two more requests than the gateway saw: bypass.
    cls, text = classify("usage", key(), Figures(1500, 200, 0, 800, 5), base, TOL)
    assert cls == "bypass"
    assert "input +500 (provider 1500, ledger 1000); output +300 (provider 800, ledger 500); requests +2" in text
    # More tokens, and the ledger holds a request whose usage could not be read: unread usage.
    unread = Figures(1000, 200, 0, 500, 4, unread_requests=1)
    assert classify("usage", key(), Figures(1500, 200, 0, 800, 4), unread, TOL)[0] == "unread_usage"
    # The same request count with fewer tokens read is unread usage too (not bypass).
    assert classify("usage", key(), Figures(1500, 200, 0, 800, 3), base, TOL)[0] == "unread_usage"
    # The ledger over the provider.
    assert classify("usage", key(), Figures(500, 0, 0, 200, 1), base, TOL)[0] == "ledger_over"
    # A web-search charge with no model.
    assert classify("cost", key(model=NON_TOKEN), Figures(usd=Decimal(10)), Figures(), TOL)[0] == "non_token_charges"


def test_tolerance_is_relative_to_the_bill_or_absolute():
    assert TOL.within(1000, 991, 0)  # 0.9 % of the provider's figure
    assert not TOL.within(1000, 989, 0)  # 1.1 %
    assert Tolerance(pct=Decimal(0), tokens=5).within(1000, 995, 5)
    assert TOL.within(None, 123, 0)  # a figure the provider does not report is never compared
    assert pct(7500, 4500) == Decimal(40)
    assert pct(0, 10) is None


def test_neighbouring_buckets_that_cancel_are_a_bucket_edge():
    # Hour 10: provider 2 requests, ledger 3; hour 11: provider 1, ledger 0. Together equal.
    one = Figures(1000, 200, 0, 500, 1)
    two, three = one + one, one + one + one
    usage = Book({key(10): two, key(11): one})
    ledger = Book({key(10): three})
    rows = reconcile(usage, Book(), ledger, "1h", cost_by_model=True, tol=TOL)
    usage_rows = [r for r in rows if r.kind == "usage"]
    assert [(r.key.bucket_start.hour, r.classification, r.beyond, r.token_drift) for r in usage_rows] == [
        (10, "bucket_edge", False, -1500), (11, "bucket_edge", False, 1500)]
    assert exit_status(usage_rows) == 0
    # Drift that does not cancel stays what it is.
    rows = reconcile(Book({key(10): two, key(11): two}), Book(), ledger, "1h", cost_by_model=True, tol=TOL)
    assert [r.classification for r in rows if r.kind == "usage"] == ["ledger_over", "bypass"]


def test_cost_rows_roll_usage_up_to_the_day_and_the_providers_split():
    usage = Book({key(10, "a"): Figures(100, 0, 0, 10, 1), key(11, "b"): Figures(200, 0, 0, 20, 1)})
    costs = Book({Key(DAY, ALL, ALL): Figures(usd=Decimal("0.5"))})
    ledger = Book({key(10, "a"): Figures(100, 0, 0, 10, 1, Decimal("0.2")),
                   key(11, "b"): Figures(200, 0, 0, 20, 1, Decimal("0.3"))})
    rows = reconcile(usage, costs, ledger, "1h", cost_by_model=False, tol=Tolerance(usd=Decimal(0)))
    [cost] = [r for r in rows if r.kind == "cost"]
    assert (cost.key, cost.provider.tokens, cost.ledger.usd, cost.classification) == (
        Key(DAY, ALL, ALL), 330, Decimal("0.5"), "match")


def test_the_ledger_groups_backends_by_their_declared_project():
    config = parse_config("""
backends:
  o1: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai,
       account: {credential_id: key_1, project_id: proj_a}}
  o2: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  a1: {kind: anthropic, base_url: "https://api.anthropic.com", deployment: proprietary, provider: anthropic,
       account: {credential_id: key_2, workspace_id: wrkspc_b}}
models: {}
""")
    assert scopes(config, "openai") == {"o1": "proj_a"}
    assert scopes(config, "anthropic") == {"a1": "wrkspc_b"}
    naive = datetime(2026, 11, 2, 10, tzinfo=UTC).replace(tzinfo=None)  # ClickHouse DateTime comes back naive
    # o1's older rows recorded no project (before migration 0009): the config's proj_a; o2's events recorded
    # proj_z themselves, which wins over the config (o2 declares none); a row with neither is ''.
    usage = [(naive, "o1", "m", "", 10, 2, 0, 5, 1, 0), (naive, "o2", "m", "proj_z", 1, 0, 0, 1, 1, 1),
             (naive, "o2", "m", "", 3, 0, 0, 3, 1, 0)]
    book = ledger_book(usage, [(naive, "o1", "m", "", Decimal("0.1"), 0)], scopes(config, "openai"), scoped=True)
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert book.rows == {Key(at, "m", "proj_a"): Figures(10, 2, 0, 5, 1, Decimal("0.1")),
                         Key(at, "m", "proj_z"): Figures(1, 0, 0, 1, 1, None, 1),
                         Key(at, "m", ""): Figures(3, 0, 0, 3, 1)}
    assert is_scoped({}, usage)
    assert not is_scoped({}, [usage[0]])
    usage_sql, cost_sql = queries("1h")
    assert "toStartOfHour(started_at, 'UTC')" in usage_sql
    assert "usage_events FINAL" in usage_sql
    assert "usage_costs FINAL" in cost_sql


def test_a_credential_id_that_looks_like_a_key_is_refused():
    with pytest.raises(ConfigError, match="never the secret"):
        parse_config("""
backends:
  o: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai,
      account: {credential_id: sk-proj-abc}}
models: {}
""")


def test_errors_never_carry_the_key(tmp_path: Path):
    key_text = "sk-admin-Secret123"
    assert scrub(f"Incorrect API key provided: {key_text}", key_text) == "Incorrect API key provided: [redacted]"
    assert scrub("Incorrect API key provided: sk-adm***t123.", "") == "Incorrect API key provided: sk-[redacted]"
    empty = tmp_path / "k"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_admin_key("openai", empty, {})
    full = tmp_path / "k2"
    full.write_text(key_text + "\n")
    assert read_admin_key("openai", full, {}) == key_text
    with pytest.raises(ValueError, match="ANTHROPIC_ADMIN_KEY") as info:
        read_admin_key("anthropic", None, {})
    assert key_text not in str(info.value)
    with pytest.raises(ValueError, match="http"):
        AdminClient("openai", "file:///etc/passwd", {}, key_text)


def test_the_window_is_whole_days():
    w = Window.of(datetime(2026, 11, 2, 10, 30, tzinfo=UTC), datetime(2026, 11, 3, 1, tzinfo=UTC), "1h")
    assert (w.since, w.until) == (DAY, DAY + timedelta(days=2))
    assert floor_bucket(datetime(2026, 11, 2, 10, 30, tzinfo=UTC), "1h") == DAY + timedelta(hours=10)
    assert ceil_bucket(DAY, "1d") == DAY
    with pytest.raises(ValueError, match="must be after"):
        Window.of(DAY, DAY, "1d")
