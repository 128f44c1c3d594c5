"""The pricer's fast path (msgspec decode, memoized integer tariffs, wire rows) against the reference path
(pydantic and PriceBook.price): same accept/reject decisions, same poison reasons, same rows, on many
generated valid and invalid messages."""

import json
import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from aimeter.config import parse_config
from aimeter.events import UsageEvent
from aimeter.pricer import fastparse
from aimeter.pricer.overrides_load import parse_overrides
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, build_batch
from tests.support.pricer_rows import cost_row, cost_rows, event_row, event_rows
from tests.unit.test_pricing_properties import usages

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  anthropic: {kind: anthropic, base_url: "https://api.anthropic.com", deployment: proprietary, provider: anthropic}
  gemini: {kind: gemini, base_url: "https://generativelanguage.googleapis.com", deployment: proprietary,
           provider: google}
  azure: {kind: azure_openai, base_url: "https://x.openai.azure.com", deployment: proprietary, provider: azure_openai}
  acme: {kind: openai_compatible, base_url: "https://acme.example/v1", deployment: proprietary, provider: acme}
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    deployment: self_hosted
    provider: vllm
    gpu:
      - {gpu_type: A100, gpu_count: 2, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500,
         effective_to: 2026-11-01}
      - {gpu_type: H100, gpu_count: 3, usd_per_node_hour: "7.77", sustained_tokens_per_second: "1234.5",
         effective_from: 2026-11-01}
    reference_model: {provider: openai, model: gpt-4o}
  ollama:
    kind: ollama
    base_url: "http://127.0.0.1:11434"
    deployment: self_hosted
    provider: ollama
    gpu: {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: "0.70", sustained_tokens_per_second: 333,
          parallel_requests: 3, effective_from: 2026-06-01}
    reference_model: {provider: anthropic, model: claude-sonnet-4-5}
models:
  gpt-4o-mini: {backend: openai}
  gpt-4o: {backend: openai}
  o3: {backend: openai}
  claude-opus-4-1: {backend: anthropic}
  claude-sonnet-4-5: {backend: anthropic}
  gemini-2.5-pro: {backend: gemini}
  prod-4o-eastus: {backend: azure}
  acme-large: {backend: acme}
  llama: {backend: vllm, upstream_model: meta-llama/Llama-3.1-70B-Instruct}
  qwen: {backend: ollama}
""")
OVERRIDES = parse_overrides("""\
version: "fast-1"
aliases:
  - provider: azure_openai
    model: "prod-4o-*"
    price_as: {provider: azure, model: gpt-4o}
prices:
  - provider: acme
    model: acme-large
    input: 1.123456789
    cache_read: 0.11
    output: 4.40
    per_request: 0.000000123456
    tiers:
      - {above_input_tokens: 100000, input: 2.20, cache_read: 0.22, output: 8.80}
      - {above_input_tokens: 500000, input: 3.3, output: 9.9}
  - provider: openai
    model: gpt-4o-mini
    effective_from: 2026-11-20
    input: 0.10
    output: 0.40
discounts:
  - provider: openai
    model: gpt-4o
    percent: 33.333333
    effective_from: 2026-11-15T12:30:00
  - provider: openai
    percent: 5
batch:
  - provider: anthropic
    percent: 50
""", "overrides.yaml")
BOOKS = [PriceBook(CONFIG, OVERRIDES), PriceBook(CONFIG)]
PRICED_AT = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
ROUTES = [  # (model_requested, model_served, backend, provider, deployment)
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "openai", "proprietary"),
    ("gpt-4o", "", "openai", "openai", "proprietary"),
    ("o3", "o3-2025-04-16", "openai", "openai", "proprietary"),
    ("claude-opus-4-1", "claude-opus-4-1-20250805", "anthropic", "anthropic", "proprietary"),
    ("claude-sonnet-4-5", "", "anthropic", "anthropic", "proprietary"),
    ("gemini-2.5-pro", "gemini-2.5-pro", "gemini", "google", "proprietary"),
    ("prod-4o-eastus", "", "azure", "azure_openai", "proprietary"),
    ("acme-large", "", "acme", "acme", "proprietary"),
    ("mystery-model", "", "openai", "openai", "proprietary"),
    ("llama", "meta-llama/Llama-3.1-70B-Instruct", "vllm", "vllm", "self_hosted"),
    ("qwen", "qwen2.5:7b", "ollama", "ollama", "self_hosted"),
    ("m", "", "nowhere", "x", "self_hosted"),
]
# Around price boundaries: the discount at 12:30, the 20th's fixed price, the GPU periods, DeepSeek-style minutes.
MOMENTS = st.one_of(
    st.datetimes(datetime(2026, 5, 30), datetime(2026, 12, 31), timezones=st.just(UTC)),  # noqa: DTZ001 - bounds are naive
    st.sampled_from([datetime(2026, 11, 15, 12, 30, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
                     datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)])
    .flatmap(lambda t: st.integers(-120_000_000, 120_000_000).map(lambda us: t + timedelta(microseconds=us))),
)
LABEL = st.one_of(st.sampled_from(["", "search", "team-a", "ünïcødé", "x" * 128]), st.text(max_size=130))


@st.composite
def events(draw: st.DrawFn) -> UsageEvent:
    """Valid events of every shape the pricer meets (the contract accepts each)."""
    requested, served, backend, provider, deployment = draw(st.sampled_from(ROUTES))
    at = draw(MOMENTS)
    usage = draw(usages())
    tags = draw(st.one_of(st.just({}), st.just({"batch": "true"}),
                          st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=16)))
    return UsageEvent(
        event_id=draw(st.uuids()), gateway_id=draw(LABEL), started_at=at,
        first_token_at=draw(st.none() | st.just(at + timedelta(milliseconds=150))),
        ended_at=at + timedelta(microseconds=draw(st.integers(0, 10**8))),
        api=draw(st.sampled_from(["openai.chat", "openai.batch", "anthropic.messages", "anthropic.batch"])),
        backend=backend, provider=provider, deployment=deployment, model_requested=requested,
        model_served=served, stream=draw(st.booleans()),
        status=draw(st.sampled_from(["ok", "upstream_error", "timeout"])), http_status=draw(st.integers(0, 999)),
        usage_source=draw(st.sampled_from(["reported", "estimated", "none"])), usage=usage,
        backend_compute_seconds=draw(st.none() | st.floats(0, 10**5) | st.floats(0, 1)),
        attribution={"team": draw(LABEL), "project": draw(LABEL), "user": draw(LABEL), "tags": tags},
    )


# Ways to spell or break one field of a valid event's JSON.
def _respell(value: object) -> st.SearchStrategy[object]:
    if isinstance(value, str) and len(value) == 36 and value.count("-") == 4:  # a UUID
        return st.sampled_from([value.upper(), value.replace("-", ""), "{" + value + "}", value[:-1], value + "0"])
    if isinstance(value, str) and value.endswith("Z") and value[:4].isdigit():  # a UTC time
        plain = value[:-1]
        return st.sampled_from([
            plain + "+00:00", plain + "+05:30", plain, plain.replace("T", " ") + "Z", plain.lower() + "z",
            plain + "1234Z" if "." in plain else plain + ".1234567Z", plain[:16] + "Z", plain[:10],
            "2026-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "2026-11-28T24:00:00Z",
            "2026-11-28T23:59:60Z", "2026-11-28T23:59:59.Z", "٢٠٢٦-11-28T00:00:00Z", plain + "Z\n", "1764311234",
        ])
    if isinstance(value, bool):
        return st.sampled_from([1, "true", None, "yes"])
    if isinstance(value, int):
        return st.sampled_from([-1, value + 0.0, str(value), 2**40, 2**40 + 1, 2**64, None, True, 1e2])
    if isinstance(value, float):
        return st.sampled_from([-0.0, -1e-9, "1.5", int(value), 1e308, None, True])
    if isinstance(value, dict):
        return st.sampled_from([None, [], {**value, "unknown": 1}, dict(list(value.items())[:1])])
    if value is None:  # an optional time or GPU-seconds
        return st.sampled_from([0, "2026-11-28T07:30:00Z", "2026-11-28T07:30:00+01:00", "", 1.5, "x"])
    return st.sampled_from([None, 5, "", "x" * 129, "ok", "self_hosted", "proprietary", f"{value} "])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A Kafka message value: the gateway's own encoding of a valid event, or one field respelled/broken,
    a field dropped, added, duplicated, or bytes that are not an event at all."""
    raw = draw(events()).model_dump_json()
    kind = draw(st.sampled_from(["gateway", "gateway", "field", "usage", "attribution", "drop", "extra",
                                 "duplicate", "junk", "subset"]))
    if kind == "gateway":
        return raw.encode()
    data = json.loads(raw)
    if kind == "junk":
        return draw(st.sampled_from([b"", b"null", b"[]", b"{", raw.encode()[:-1], raw.encode() + b"x",
                                     b"\xef\xbb\xbf" + raw.encode(), raw.encode().replace(b'"ok"', b'"\xff"')]))
    if kind in ("field", "usage", "attribution"):
        target = data if kind == "field" else data[kind]
        name = draw(st.sampled_from(sorted(target)))
        target[name] = draw(_respell(target[name]))
    elif kind == "drop":
        data.pop(draw(st.sampled_from(sorted(data))))
    elif kind == "extra":
        data[draw(st.sampled_from(["extra", "usage_extra"]))] = 1
    elif kind == "subset":
        usage = data["usage"]
        usage[draw(st.sampled_from(["reasoning_output_tokens", "cache_read_input_tokens",
                                    "cache_creation_1h_input_tokens", "input_audio_tokens"]))] += 10**6
    else:  # a key twice: pydantic keeps the last value, msgspec validates both
        name = draw(st.sampled_from(sorted(data)))
        text = json.dumps(data)
        return ("{" + json.dumps(name) + ": " + json.dumps(draw(_respell(data[name]))) + ", " + text[1:]).encode()
    return json.dumps(data, ensure_ascii=draw(st.booleans())).encode()


def outcome(raw: bytes, book: PriceBook, *, fast: bool) -> tuple:
    batch = build_batch([raw], book, PRICED_AT, fast=fast)
    return ([r for _, r in batch.poison], batch.events, batch.charges, batch.routes, batch.route_of,
            list(event_rows(batch)), list(cost_rows(batch)))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from(BOOKS))
def test_fast_and_reference_paths_agree_on_every_message(raw, book):
    assert outcome(raw, book, fast=True) == outcome(raw, book, fast=False)


def contents(batch) -> tuple:
    """A batch regardless of row order (the fast path's rows come before the reference path's)."""
    rows = sorted((e.event_id, repr(e), c, batch.routes[r]) for e, c, r in
                  zip(batch.events, batch.charges, batch.route_of, strict=True))
    return batch.poison, rows, sorted(map(repr, cost_rows(batch)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), max_size=25), st.sampled_from(BOOKS))
def test_whole_batches_agree_too(raws, book):
    assert contents(build_batch(raws, book, PRICED_AT)) == contents(build_batch(raws, book, PRICED_AT, fast=False))


@settings(max_examples=300, deadline=None)
@given(events(), st.sampled_from(BOOKS))
def test_rows_are_the_reference_rows(event, book):
    """Valid gateway events take the fast path, and their rows are exactly event_row / priced_row's."""
    raw = event.model_dump_json().encode()
    batch = build_batch([raw], book, PRICED_AT)
    assert not batch.poison
    assert list(event_rows(batch)) == [event_row(event)]
    assert list(cost_rows(batch)) == [cost_row(event, book, 0, PRICED_AT)]
    assert len(event_rows(batch)[0]) == len(EVENT_COLUMNS)
    assert len(cost_rows(batch)[0]) == len(COST_COLUMNS)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_the_fast_decoder_only_accepts_what_pydantic_accepts(raw):
    fast = fastparse.decode(raw)
    assume(fast is not None and not fastparse.bad_texts([fast]))
    event = UsageEvent.model_validate_json(raw)  # must not raise
    assert str(event.event_id) == fast.event_id
    assert event.started_at == datetime.fromisoformat(fast.started_at)


def sample(i: int, **changes: object) -> UsageEvent:
    at = datetime(2026, 11, 28, 7, 30, tzinfo=UTC) + timedelta(seconds=i, microseconds=i)
    requested, served, backend, provider, deployment = ROUTES[i % len(ROUTES)]
    fields = {"event_id": f"0193a6f0-0000-7000-8000-{i:012x}", "started_at": at, "ended_at": at,
              "api": "openai.chat", "backend": backend, "provider": provider, "deployment": deployment,
              "model_requested": requested, "model_served": served, "status": "ok", "http_status": 200,
              "usage_source": "reported", "usage": {"input_tokens": 100 * i, "output_tokens": 7 * i}}
    return UsageEvent.model_validate(fields | changes)


def test_a_batch_keeps_every_message_once_and_poison_in_order():
    good = [sample(i).model_dump_json().encode() for i in range(40)]
    bad = [b"{}", good[3].replace(b'"schema_version":"1"', b'"schema_version":"2"'), b"not json"]
    mixed = good[:5] + bad[:1] + good[5:10] + bad[1:] + good[10:]
    batch = build_batch(mixed, BOOKS[0], PRICED_AT)
    assert [raw for raw, _ in batch.poison] == bad
    assert sorted(e.event_id for e in batch.events) == sorted(json.loads(g)["event_id"] for g in good)
    assert len(event_rows(batch)) == len(cost_rows(batch)) == len(good)
    assert all(reason.startswith("invalid UsageEvent v1") for _, reason in batch.poison)


def test_non_utc_offsets_take_the_reference_path_and_store_the_same_instant():
    at = datetime(2026, 11, 28, 7, 30, 0, 999_999, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    batch = build_batch([sample(1, started_at=at).model_dump_json().encode()], BOOKS[0], PRICED_AT)
    assert batch.events[0].started_at == "2026-11-28T02:00:00.999999Z"
    assert event_rows(batch)[0][2] == at


def test_an_unrepresentable_utc_time_is_poison_not_a_stuck_batch():
    data = json.loads(sample(1).model_dump_json())
    data["started_at"] = "0001-01-01T00:00:00+01:00"  # valid for pydantic, before year 1 in UTC
    raw = json.dumps(data).encode()
    batch = build_batch([raw], BOOKS[0], PRICED_AT)
    assert [reason.split(":")[0] for _, reason in batch.poison] == ["cannot be stored"]
    assert not batch.events


@given(st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
       st.integers(0, 61), st.sampled_from(["", ".5", ".123456", ".000000", ".1234567"]))
def test_the_batch_text_check_the_pattern_and_pydantic_agree_on_times(year, month, day, hour, minute, second, frac):
    """Every time spelled in the canonical shape: real ones pass all three checks, others none."""
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{frac}Z"
    by_pattern = re.fullmatch(fastparse.UTC_TEXT, text) is not None
    try:
        TypeAdapter(AwareDatetime).validate_json(json.dumps(text))
        by_pydantic = len(frac) <= 7  # pydantic takes more digits (and truncates): the fast path defers those
    except ValidationError:
        by_pydantic = False
    assert fastparse._canonical([text], fastparse.UTC_TEXT) == by_pattern == by_pydantic
