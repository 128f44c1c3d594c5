"""`aimeter up` with a webhook configured runs `aimeter alerts` beside the pricer and gateway, and the pricer
writes the config's budgets to ClickHouse for the budget-use panel (the one writer of embedded chDB)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aimeter.local.kafka import free_port
from aimeter.settings import Settings
from aimeter.store.client import query_endpoint_client
from tests.support.stack import CONFIG

pytestmark = pytest.mark.integration
BUDGETS = """
budgets:
  caps:
    - {name: soft-team, scope: team, value: search, usd: "25", period: week, timezone: Asia/Tokyo, enforcement: soft}
    - {name: hard-key, scope: key, value: k-1, usd: "100"}
"""


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = path.read_text(errors="replace") if path.exists() else ""
        if text in found:
            return found
        assert proc.poll() is None, found
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not in {path}")


def test_up_starts_alerts_when_a_webhook_is_set_and_the_pricer_stores_the_budgets(kafka_bootstrap, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=free_port()) + BUDGETS)
    query_port = free_port()
    env = {**os.environ, "AIMETER_DATA_DIR": str(tmp_path), "AIMETER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "AIMETER_GATEWAY_PORT": str(free_port()), "AIMETER_QUERY_PORT": str(query_port),
           "AIMETER_PRICER_METRICS_PORT": "0", "AIMETER_PRICER_GROUP": f"pricer-{uuid.uuid4().hex[:8]}",
           "AIMETER_ALERTS_GROUP": f"alerts-{uuid.uuid4().hex[:8]}",
           "AIMETER_ALERTS_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook"}
    out = tmp_path / "up.out"
    up = subprocess.Popen([sys.executable, "-m", "aimeter", "up", "--config", str(config)], env=env,
                          stdout=out.open("ab"), stderr=subprocess.STDOUT)
    try:
        started = wait_for_text(out, "up: serving", up)
        pid = int(re.search(r"started alerts \(pid (\d+)", started).group(1))
        wait_for_text(tmp_path / "logs" / "alerts.log", "1 soft budgets (of 2)", up)
        settings = Settings(data_dir=tmp_path)
        client = query_endpoint_client(settings.resolved_clickhouse_url, query_port)
        rows = client.query("SELECT name, scope, scope_value, enforcement, period, timezone, amount_usd, window_start "
                            "FROM budget_windows FINAL WHERE window_start <= now64(3) AND now64(3) < window_reset "
                            "ORDER BY name").result_rows
        assert [r[:7] for r in rows] == [("hard-key", "key", "k-1", "hard", "month", "UTC", Decimal(100)),
                                         ("soft-team", "team", "search", "soft", "week", "Asia/Tokyo", Decimal(25))]
        monday = rows[1][7].replace(tzinfo=UTC)
        assert monday.hour == 15  # Monday 00:00 in Tokyo
        assert monday <= datetime.now(UTC)
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=120)
    assert code == 0, out.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # up stopped its alerts child too
