"""The tariff memo cannot price one event with another's price (issue 16.3): PriceBook.price reads no event
field outside PRICE_KEY_INPUTS (the memo key, tariff.RouteKey) and PER_EVENT_INPUTS (what each charge is
computed from), and route_key() gives the RouteKey the reference path would name."""

from datetime import UTC, datetime
from typing import Any

import pytest

from aimeter.events import TokenUsage, UsageEvent
from aimeter.pricer import fastparse
from aimeter.pricer.pricebook import PER_EVENT_INPUTS, PRICE_KEY_INPUTS, PriceBook
from aimeter.pricer.tariff import RouteKey, route_key
from tests.unit.test_pricing import CONFIG
from tests.unit.test_pricing_selfhosted import CONFIG as HOSTED_CONFIG

AT = datetime(2025, 11, 15, 12, 30, 5, tzinfo=UTC)


class Reads:
    """Wraps an event and records the dotted name of every field read through it (tags by key)."""

    def __init__(self, target: Any, seen: set[str], prefix: str = "") -> None:
        self._target, self._seen, self._prefix = target, seen, prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name == "attribution":
            return Reads(value, self._seen, "attribution.")
        if name == "tags":
            return Tags(value, self._seen)
        self._seen.add(self._prefix + name)
        return value


class Tags(dict):
    def __init__(self, tags: dict[str, str], seen: set[str]) -> None:
        super().__init__(tags)
        self._seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(f"attribution.tags.{key}")
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._seen.add(f"attribution.tags.{key}")
        return super().__getitem__(key)


def event(**fields: Any) -> UsageEvent:
    base = {"event_id": "0193a6f0-0000-7000-8000-000000000001", "started_at": AT, "ended_at": AT,
            "api": "openai.chat", "backend": "openai", "provider": "openai", "deployment": "proprietary",
            "model_requested": "gpt-4o", "status": "ok", "http_status": 200, "usage_source": "reported",
            "usage": TokenUsage(input_tokens=1000, output_tokens=200), "attribution": {"team": "search"}}
    return UsageEvent(**(base | fields))


HOSTED_BACKEND = next(name for name, b in HOSTED_CONFIG.backends.items() if b.gpu_periods)
CASES = {
    "list price": (CONFIG, event()),
    "batch tag": (CONFIG, event(attribution={"team": "search", "tags": {"batch": "true"}})),
    "unknown model": (CONFIG, event(model_requested="no-such-model")),
    "unmetered": (CONFIG, event(usage_source="none", usage=TokenUsage())),
    "self-hosted by throughput": (HOSTED_CONFIG, event(backend=HOSTED_BACKEND, deployment="self_hosted",
                                                       provider="vllm", model_requested="llama")),
    "self-hosted by GPU seconds": (HOSTED_CONFIG, event(backend=HOSTED_BACKEND, deployment="self_hosted",
                                                        provider="vllm", model_requested="llama",
                                                        backend_compute_seconds=1.5)),
}


@pytest.mark.parametrize("case", CASES)
def test_the_price_book_reads_only_the_memo_key_and_the_per_event_inputs(case: str) -> None:
    config, e = CASES[case]
    seen: set[str] = set()
    assert PriceBook(config).price(Reads(e, seen)) == PriceBook(config).price(e)  # type: ignore[arg-type]
    assert {"http_status", "usage_source", "usage"} <= seen  # the recorder sees what price() reads
    assert seen <= PRICE_KEY_INPUTS | PER_EVENT_INPUTS, seen - (PRICE_KEY_INPUTS | PER_EVENT_INPUTS)


@pytest.mark.parametrize("by_minute", [True, False])
def test_route_key_is_the_route_key_named_from_the_reference_event(by_minute: bool) -> None:
    e = event(attribution={"team": "search", "tags": {"batch": "true"}}, model_served="gpt-4o-2024-08-06")
    twin = fastparse.decode_all([e.model_dump_json().encode()])[0]
    assert twin is not None
    text = twin.started_at
    expected = RouteKey(e.deployment.value, e.backend, e.provider, e.model_requested, e.model_served, e.api, "true",
                        text[:16] if by_minute else text)
    assert route_key(twin, by_minute) == expected
    assert route_key(twin, by_minute)[:6] == tuple(getattr(twin, name) for name in RouteKey._fields[:6])
