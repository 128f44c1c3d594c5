"""The alert state's start from the ledger (chDB, as the pricer stores it): a team's hours for the spike rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from aimeter.alerts.ledger import load_ledger
from aimeter.alerts.rules import HOUR, Rules, last_complete_hour
from aimeter.alerts.state import AlertState
from tests.integration.chdb_fixture import ingest
from tests.unit.test_alerts import BOOK, tokens_for, usage_event

pytestmark = pytest.mark.integration


def test_a_spike_the_ledger_already_holds_fires_at_start(metering_store: Client):
    rules = Rules()
    now = datetime.now(UTC)
    hour = last_complete_hour(now, rules)  # always before the recount line (now - 1 h): it comes as totals
    quiet, busy = f"quiet-{uuid.uuid4().hex[:8]}", f"busy-{uuid.uuid4().hex[:8]}"
    events = [usage_event(tokens_for(Decimal(2)), team=team, at=hour - HOUR * i + timedelta(minutes=1))
              for team in (quiet, busy) for i in range(1, 25)]  # $2 an hour for a day
    events += [usage_event(tokens_for(Decimal(6)), team=quiet, at=hour + timedelta(minutes=1)),  # 3x: not above
               usage_event(tokens_for(Decimal(7)), team=busy, at=hour + timedelta(minutes=1)),
               usage_event(tokens_for(Decimal(7)), team=busy, at=hour + timedelta(minutes=59))]
    ingest(metering_store, events, BOOK)
    state = AlertState([], rules, since=now - HOUR, now=now)
    assert load_ledger(metering_store, state, now) == []
    assert state.hourly[busy][hour] == 2 * BOOK.price(events[-1]).cost_usd
    spikes = [a for a in state.tick(now) if a.fields["team"] in (quiet, busy)]
    assert [a.key for a in spikes] == [f"spike/{busy}/{hour.isoformat()}"]
    assert Decimal(spikes[0].fields["trailing_mean_usd"]) == BOOK.price(events[0]).cost_usd
