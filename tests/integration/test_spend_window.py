"""`aimeter spend` without --until reads up to the moment it runs: a request stored a moment ago is in the report.

The CLI once cut its ``now`` to the whole second, so ``--since 1h`` ended at hh:mm:ss.000 and a request that
started in the same second (stored and priced ~0.3 s later, the CLI started ~0.5 s after that) was outside
[since, until). test_spend_cli's pricer test lost its one row that way in a whole-suite run (its team missing).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aimeter import cli
from aimeter.local.kafka import free_port
from aimeter.pricer.pricebook import PriceBook
from tests.integration.chdb_fixture import ingest
from tests.integration.test_finance_numbers import call, config

pytestmark = pytest.mark.integration


def test_spend_until_now_counts_a_request_stored_in_the_same_second(metering_store, chdb_path: Path, monkeypatch,
                                                                    capsys):
    # The real report_client: nothing answers on this port, so it opens the session's store (this process's).
    monkeypatch.setenv("AIMETER_CLICKHOUSE_URL", f"chdb://{chdb_path}")
    monkeypatch.setenv("AIMETER_QUERY_PORT", str(free_port()))
    book = PriceBook(config("gpu-window"))
    for _attempt in range(5):
        while time.time() % 1 > 0.3:  # start early in a second, so the CLI reads its clock in the same one
            time.sleep(0.01)
        team = f"window-{uuid.uuid4().hex[:8]}"
        started = datetime.now(UTC)
        ingest(metering_store, [call(started, team, inp=1_000_000)], book)
        assert cli.main(["spend", "--by", "team", "--since", "1h", "--format", "json"]) == 0
        after = datetime.now(UTC)
        rows = json.loads(capsys.readouterr().out)
        if int(after.timestamp()) != int(started.timestamp()):
            continue  # the second turned before the CLI read its clock: the edge was not exercised, try again
        mine = [r for r in rows if r["team"] == team]
        assert mine, f"a request that started at {started:%H:%M:%S.%f} is missing from spend run before {after:%T.%f}"
        assert mine[0]["requests"] == 1
        assert mine[0]["cost_usd"] == "2.500000000000"  # gpt-4o: $2.50 per 1M input tokens
        return
    pytest.fail("the CLI never ran in the same second as the request it reports (5 tries): the box is too slow")
