"""Requests stored without a cost are logged, once per model per hour, with what to do about them.

An unpriced or unmetered row is counted everywhere (spend, chargeback, reconcile, the dashboards' red
stat), but someone has to act on it: add a price, or find why the usage could not be read. A line per
request would drown the log in a busy hour; none at all is how a $0 goes unnoticed. So the pricer says it
once per (status, provider, model) per hour of its own clock, with the count of the batch that showed it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aimeter.pricer.pricebook import UNMETERED, UNPRICED

log = logging.getLogger("aimeter.pricer")
Key = tuple[str, str, str]  # (status, provider, model)


def advice(status: str, provider: str, model: str, backend: str, *, count: int, note: str) -> str:
    """The log line for one model: what happened, how it is counted, and what to do."""
    who = f"{provider}/{model or '<no model>'} (backend {backend})"
    if status == UNPRICED:
        return (f"{count} request(s) to {who} stored unpriced, cost NULL: {note}. They count as unpriced in spend, "
                "chargeback and the dashboards. To price them, add the model to the price overrides file or give "
                "its route `priced_as: {provider: ..., model: ...}`, then run `aimeter reprice --since <this hour>`. "
                "(Logged once per model per hour.)")
    return (f"{count} 2xx answer(s) from {who} stored unmetered, cost NULL: the upstream answered but the gateway "
            "could read no usage, so the provider billed tokens we could not count. They count as unmetered in "
            "spend, chargeback, reconcile and the dashboards. Check that the upstream returns usage (OpenAI streams "
            "need stream_options.include_usage; a proxy in between may strip it). (Logged once per model per hour.)")


class NotPricedLog:
    """Remembers which (status, provider, model) it logged in the current hour."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 logger: logging.Logger = log) -> None:
        self.clock, self.logger = clock, logger
        self.logged: dict[Key, datetime] = {}

    def note_batch(self, events: list[Any], charges: list[Any]) -> int:
        """Log what this batch stored without a cost and was not logged yet this hour; returns lines logged."""
        seen: Counter[tuple[str, str, str, str, str]] = Counter()
        for event, (_amounts, _reference, outcome) in zip(events, charges, strict=True):
            if outcome.status in (UNPRICED, UNMETERED):
                model = event.model_served or event.model_requested
                seen[outcome.status, event.provider, model, event.backend, outcome.note] += 1
        hour = self.clock().replace(minute=0, second=0, microsecond=0)
        lines = 0
        for (status, provider, model, backend, note), count in seen.items():
            if self.logged.get((status, provider, model)) == hour:
                continue
            self.logged[status, provider, model] = hour
            self.logger.warning("%s", advice(status, provider, model, backend, count=count, note=note))
            lines += 1
        return lines
