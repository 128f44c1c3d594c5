"""Faults with real processes: every request is metered exactly once, with the exact cost sum.

A broker drop right after the pricer's first group join has its own test: librdkafka was once seen
not to rejoin after such a drop, and the consumer loop now replaces a consumer that stays without
partitions past a deadline (aimeter.pricer.consumer.REJOIN_DEADLINE_S).

Each test owns a whole stack (its own Kafka broker, pricer, gateway, fake upstream), so it can
stop and kill parts of it. Request cost is fixed and hand-computed: gpt-4o-mini with 1,000 prompt
and 100 completion tokens = (1000 x $0.15 + 100 x $0.60) / 1M = $0.00021.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import openai
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from aimeter.events import COUNTS_TOPIC, USAGE_TOPIC
from aimeter.events.counts import encode_count
from aimeter.gateway.keys import KeyFile, new_key
from aimeter.local.kafka import LocalKafka, free_port
from aimeter.local.stack import Stack, settings_env
from aimeter.settings import Settings
from aimeter.store.client import query_endpoint_client
from tests.integration.metrics_scrape import scrape, unlabeled
from tests.support.stack import CONFIG

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
COST_EACH = (1000 * Decimal("0.15") + 100 * Decimal("0.60")) / Decimal(1_000_000)
TOTALS_SQL = "SELECT count(), sum(cost_usd) FROM usage_costs FINAL WHERE team = 'faults'"
EVENTS_SQL = "SELECT count() FROM usage_events FINAL WHERE team = 'faults'"


class FaultStack:
    def __init__(self, root: Path) -> None:
        self.kafka = LocalKafka(root / "kafka", port=free_port(), controller_port=free_port(),
                                cache_dir=REPO / ".aimeter" / "cache" / "kafka")
        upstream = free_port()
        config = root / "config.yaml"
        config.write_text(CONFIG.format(port=upstream), encoding="utf-8")
        self.settings = Settings(data_dir=root, kafka_bootstrap=self.kafka.bootstrap, gateway_port=free_port(),
                                 query_port=free_port(), pricer_group="pricer", config=config,
                                 kafka_delivery_timeout_s=3.0, pricer_batch_max=50,
                                 pricer_metrics_port=free_port(), keys_store="file")  # Kafka starts later
        store = KeyFile(self.settings.resolved_keys_file)
        self.key, record = new_key("faults", "", "", datetime.now(UTC))
        store.save({record.key_id: record})
        self.stack = Stack(self.settings, config, fake_upstream_port=upstream)

    def start(self) -> None:
        self.kafka.start()
        self.stack.start()

    def stop(self) -> None:
        self.stack.stop()
        self.kafka.stop()

    def send(self, n: int, concurrency: int = 16) -> None:
        """n requests through the gateway; every one must succeed for the client."""
        asyncio.run(_send(self.stack.gateway_url, self.key, n, concurrency))

    def clickhouse(self) -> clickhouse_connect.driver.client.Client:
        return query_endpoint_client(self.settings.resolved_clickhouse_url, self.settings.query_port)

    def wait_totals(self, n: int, timeout: float = 90.0) -> tuple[int, Decimal]:
        client, deadline = self.clickhouse(), time.monotonic() + timeout
        while True:
            count, total = client.query(TOTALS_SQL).result_rows[0]
            if count >= n or time.monotonic() > deadline:
                return count, total
            time.sleep(0.5)

    def metrics(self) -> dict[str, float]:
        return unlabeled(scrape(f"{self.stack.gateway_url}/metrics", self.settings.resolved_metrics_token_file))


async def _send(base_url: str, key: str, n: int, concurrency: int) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: prompt=1000 completion=100"}])

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()


@pytest.fixture
def faults(tmp_path: Path) -> Iterator[FaultStack]:
    running = FaultStack(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def assert_exact(faults: FaultStack, n: int) -> None:
    count, total = faults.wait_totals(n)
    events = faults.clickhouse().command(EVENTS_SQL)
    print(f"sent={n} stored={count} events={events} lost={max(n - count, 0)} duplicated={max(count - n, 0)}")
    assert count == n, f"{n} requests sent, {count} priced rows stored"
    assert int(events) == n
    assert total == n * COST_EACH


def test_kafka_outage_spools_then_replays_without_loss(faults):
    faults.send(100)
    faults.wait_totals(100)
    faults.kafka.stop()
    faults.send(100)  # the gateway keeps serving while Kafka is down
    deadline = time.monotonic() + 30
    while faults.metrics()["aimeter_events_spooled_total"] < 100 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert faults.metrics()["aimeter_events_spooled_total"] >= 100
    faults.kafka.start()
    assert_exact(faults, 200)
    assert faults.metrics()["aimeter_spool_bytes"] == 0


def test_gateway_restart_with_a_non_empty_spool(faults):
    faults.kafka.stop()
    faults.send(150)
    faults.stack.stop_child("gateway")  # graceful stop: undelivered events are purged into the spool
    spool = faults.settings.data_dir / "spool" / f"{faults.settings.gateway_id}.jsonl"
    assert spool.exists()
    assert len(spool.read_bytes().splitlines()) == 150
    faults.kafka.start()
    faults.stack.start_child("gateway")  # replays the spool at start
    assert_exact(faults, 150)


def test_pricer_killed_mid_batch_then_restarted(faults):
    faults.stack.stop_child("pricer")
    faults.send(1500)
    faults.stack.start_child("pricer")
    client = faults.clickhouse()
    deadline = time.monotonic() + 60
    while int(client.command(EVENTS_SQL)) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    stored_before_kill = int(client.command(EVENTS_SQL))
    faults.stack.stop_child("pricer", kill=True)
    assert stored_before_kill < 1500, "the kill must land mid-stream for this test to mean anything"
    faults.stack.start_child("pricer")
    assert_exact(faults, 1500)


def test_replaying_the_whole_topic_changes_no_total(faults):
    faults.send(300)
    assert_exact(faults, 300)
    faults.stack.stop_child("pricer")
    # A new consumer group starts from offset 0 and re-inserts every event.
    group = f"replay-{uuid.uuid4().hex[:6]}"
    faults.stack.settings = faults.settings.model_copy(update={"pricer_group": group})
    faults.stack.start_child("pricer")
    wait_caught_up(faults.kafka.bootstrap, group)
    assert_exact(faults, 300)


def wait_caught_up(bootstrap: str, group: str, timeout: float = 60.0) -> None:
    """Until the group has committed every offset of the usage topic, i.e. it re-read everything."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(USAGE_TOPIC, p)
                      for p in consumer.list_topics(USAGE_TOPIC, timeout=10).topics[USAGE_TOPIC].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            if all(committed[p] >= end for p, end in ends.items() if end > 0):
                return
            time.sleep(0.5)
        raise AssertionError(f"group {group} did not catch up: committed {committed}, end {ends}")
    finally:
        consumer.close()


def test_clickhouse_outage_pauses_and_retries_without_loss(faults, tmp_path):
    switch = tmp_path / "clickhouse-down"
    faults.stack.stop_child("pricer")
    faults.stack.settings = faults.settings.model_copy(update={"fault_insert_fail_file": switch})
    faults.stack.start_child("pricer")
    faults.send(100)
    faults.wait_totals(100)
    switch.touch()  # every insert now fails
    faults.send(200)
    time.sleep(4)
    assert faults.clickhouse().query(TOTALS_SQL).result_rows[0][0] == 100, "nothing may land during the outage"
    switch.unlink()
    assert_exact(faults, 300)
    log = faults.stack.child("pricer").log_path.read_text()
    assert "writing a batch of" in log
    assert "retrying the batch" in log


def test_reconcile_matches_after_an_outage_and_catches_a_gap(faults):
    faults.send(120)
    faults.wait_totals(120)
    faults.kafka.stop()
    faults.send(80)
    faults.kafka.start()
    assert_exact(faults, 200)
    env = {**settings_env(faults.settings), "PATH": "/usr/bin:/bin"}
    reconcile = [sys.executable, "-m", "aimeter", "reconcile", "--since", "2h"]
    deadline = time.monotonic() + 30
    while True:  # the gateway sends its counts every 2 s; the pricer stores them (ai.counts.v1 -> gateway_counts)
        ok = subprocess.run(reconcile, env=env, capture_output=True, text=True, timeout=60, check=False)
        if ok.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert " 200 " in ok.stdout
    assert faults.settings.gateway_id in ok.stdout  # each gateway's count is named

    # A second gateway (another host, as far as reconcile knows) claims one event more than was stored.
    hour = faults.clickhouse().query("SELECT formatDateTime(max(hour), '%Y-%m-%dT%H:00Z') FROM gateway_counts FINAL"
                                     ).result_rows[0][0]
    producer = Producer({"bootstrap.servers": faults.kafka.bootstrap})
    key, value = encode_count("gw-other-host", hour, 1, datetime.now(UTC))
    producer.produce(COUNTS_TOPIC, value, key=key)
    assert producer.flush(30) == 0
    deadline = time.monotonic() + 30
    while True:
        gap = subprocess.run(reconcile, env=env, capture_output=True, text=True, timeout=60, check=False)
        if gap.returncode == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert gap.returncode == 1, gap.stdout + gap.stderr
    assert "GAP" in gap.stdout
    assert "gw-other-host" in gap.stdout


def wait_group_stable(bootstrap: str, group: str, timeout: float = 60.0) -> None:
    """Until the group has a member holding partitions: the moment the pricer has just joined."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
        if described.state == ConsumerGroupState.STABLE and any(
                m.assignment.topic_partitions for m in described.members):
            return
        time.sleep(0.2)
    raise AssertionError(f"group {group} never became stable with an assignment")


@pytest.mark.parametrize("down_s", [2.0, 15.0])
def test_pricer_resumes_after_the_broker_drops_right_after_its_first_join(faults, down_s):
    """The broker goes away 2 s after the pricer first joins and stays down past the session timeout.

    librdkafka then times out the session, revokes the assignment and rejoins once the broker is
    back; the pricer must pick up every event produced after that, none lost, none doubled.
    """
    wait_group_stable(faults.kafka.bootstrap, faults.settings.pricer_group)
    time.sleep(2)
    faults.kafka.stop()
    time.sleep(down_s)
    faults.kafka.start()
    faults.send(100)
    assert_exact(faults, 100)


# --- issue 15: nothing answered is ever lost ------------------------------------------------------------
# Each row prints (and the README's fault table quotes) sent / answered / stored / lost / duplicated and
# reconcile's verdict. "lost" counts answered requests whose event_id is not in ClickHouse; "duplicated"
# counts event_ids stored more than once after deduplication (FINAL).

IDS_SQL = "SELECT toString(event_id) FROM usage_events FINAL WHERE team = 'faults'"
DUPS_SQL = ("SELECT count() FROM (SELECT event_id FROM usage_costs FINAL WHERE team = 'faults' "
            "GROUP BY event_id HAVING count() > 1)")


class Load:
    """Requests from a thread, recording the event id of every answered one; failures are counted, not raised."""

    def __init__(self, base_url: str, key: str, n: int, concurrency: int = 16) -> None:
        self.answered: set[str] = set()
        self.failed = 0
        self.refused = 0  # 503 from the gateway (closed policy)
        self.sent = 0
        self._args = (base_url, key, n, concurrency)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Load:
        self.thread.start()
        return self

    def join(self, timeout: float = 120.0) -> Load:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the load did not finish in time"
        return self

    async def _run(self) -> None:
        base_url, key, n, concurrency = self._args
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=10)
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                if self.stop.is_set():
                    return
                self.sent += 1
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: prompt=1000 completion=100"}])
                    raw.parse()
                    self.answered.add(raw.headers["x-aimeter-event-id"])
                except openai.APIStatusError as exc:
                    if exc.status_code == 503:
                        self.refused += 1
                    else:
                        self.failed += 1
                except openai.APIError:
                    self.failed += 1
                    await asyncio.sleep(0.05)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await client.close()


def reconcile_verdict(faults: FaultStack, timeout: float = 30.0) -> str:
    env = {**settings_env(faults.settings), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "aimeter", "reconcile", "--since", "2h"]
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        if out.returncode == 0 or time.monotonic() > deadline:
            return "exact" if out.returncode == 0 else f"NOT exact:\n{out.stdout}{out.stderr}"
        time.sleep(1)


def fault_row(name: str, faults: FaultStack, sent: int, answered: set[str], timeout: float = 120.0) -> dict[str, int]:
    """Wait until every answered event is stored (or time out), then count and print the table row."""
    deadline = time.monotonic() + timeout
    while True:
        try:  # the pricer (which serves the query endpoint) may be restarting
            client = faults.clickhouse()
            stored = {row[0] for row in client.query(IDS_SQL).result_rows}
        except Exception:  # noqa: BLE001
            stored = set()
        if (stored and answered <= stored) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2)  # let any late duplicate land before counting them
    stored = {row[0] for row in client.query(IDS_SQL).result_rows}
    row = {"sent": sent, "answered": len(answered), "stored": len(stored), "lost": len(answered - stored),
           "duplicated": int(client.command(DUPS_SQL)), "extra": len(stored - answered)}
    verdict = reconcile_verdict(faults)
    print(f"FAULT ROW | {name} | " + " | ".join(f"{k}={v}" for k, v in row.items()) + f" | reconcile {verdict}")
    assert row["lost"] == 0, f"{row['lost']} answered requests have no stored event"
    assert row["duplicated"] == 0
    assert verdict == "exact", verdict
    return row


@pytest.fixture
def cold(tmp_path: Path) -> Iterator[FaultStack]:
    """A stack whose Kafka is not started: the test decides when."""
    running = FaultStack(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_gateway_and_pricer_start_with_kafka_down_then_kafka_started(cold):
    started = time.monotonic()
    cold.stack.start()  # Kafka is down: nothing may wait for it
    assert time.monotonic() - started < 60
    load = Load(cold.stack.gateway_url, cold.key, 200).start().join()
    assert load.failed == 0, "the gateway must answer without Kafka"
    assert load.refused == 0
    assert cold.metrics()["aimeter_events_journaled_total"] == 200
    time.sleep(4)  # past the 3 s delivery timeout: the events move to the spool
    cold.kafka.start()
    fault_row("gateway started with Kafka down, then Kafka started", cold, load.sent, load.answered)
    for part in ("gateway", "pricer"):
        log = cold.stack.child(part).log_path.read_text()
        assert "Traceback" not in log, log[-3000:]
        # librdkafka's log: one line when the broker is unreachable, one when it answers again
        print(f"{part} log about Kafka:\n" + "".join(ln for ln in log.splitlines(keepends=True) if "Kafka" in ln))
        assert log.count("unreachable") <= 2, log[-3000:]


def test_gateway_kill_9_under_load_then_restarted(faults):
    load = Load(faults.stack.gateway_url, faults.key, 100_000, concurrency=24).start()
    deadline = time.monotonic() + 30
    while len(load.answered) < 1500 and time.monotonic() < deadline:
        time.sleep(0.05)
    faults.stack.stop_child("gateway", kill=True)  # mid-load, with events in librdkafka's linger
    answered_before_kill = len(load.answered)
    faults.stack.start_child("gateway")  # replays the journal it left; the load goes on against it
    time.sleep(2)
    load.stop.set()
    load.join()
    assert load.failed > 0, "the kill must land while requests were in flight"
    row = fault_row("gateway kill -9 under load, then restarted", faults, load.sent, load.answered)
    assert answered_before_kill >= 1500
    assert row["answered"] > answered_before_kill


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the unit tests simulate ENOSPC")


def _fill(path: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the filesystem at ``path``."""
    filler = path / "filler"
    st = os.statvfs(path)
    with filler.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(st.f_bavail * st.f_frsize - leave, 1))
    return filler


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_spool_on_a_full_filesystem(tmp_path: Path, policy: str):
    spool_dir = tmp_path / "spool-fs"
    _mount_tmpfs(spool_dir, "1m")
    (tmp_path / "stack").mkdir()
    faults = None
    try:
        faults = FaultStack(tmp_path / "stack")
        faults.settings = faults.settings.model_copy(update={
            "spool_dir": spool_dir, "journal_segment_bytes": 64 * 1024, "spool_full_policy": policy})
        faults.stack.settings = faults.settings
        faults.start()
        faults.kafka.stop()
        _fill(spool_dir, leave=96 * 1024)  # room for one more 64 KB journal segment and a few spooled events
        load = Load(faults.stack.gateway_url, faults.key, 400, concurrency=8).start().join()
        deadline = time.monotonic() + 30  # deliveries time out (3 s): the spool fills, then events are held in memory
        while (metrics := faults.metrics())["aimeter_events_held_in_memory_total"] == 0 \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics["aimeter_journal_full"] == 1
        if policy == "open":
            assert load.refused == 0
            assert load.failed == 0
            assert metrics["aimeter_events_unjournaled_total"] > 0
        else:
            assert load.refused > 0
            assert load.failed == 0, "closed: refused before forwarding, never a failure"
            assert metrics["aimeter_events_unjournaled_total"] == 0
        assert metrics["aimeter_events_held_in_memory_total"] > 0, "the spool's disk is full: events wait in memory"
        assert metrics["aimeter_events_dropped_total"] == 0
        faults.kafka.start()
        row = fault_row(f"spool on a full filesystem (1 MiB tmpfs), policy {policy}", faults, load.sent,
                        load.answered)
        assert row["extra"] == 0, "closed: a refused request is never forwarded, so it has no event"
        log = faults.stack.child("gateway").log_path.read_text()
        print("".join(line for line in log.splitlines(keepends=True) if "journal:" in line or "spool:" in line))
        assert "Traceback" not in log
        assert log.count("journal: no room") == 1, "one line per state change"
    finally:
        if faults is not None:
            faults.stop()
        subprocess.run(["umount", "-l", str(spool_dir)], check=False)


def test_pricer_killed_under_aimeter_up(tmp_path: Path):
    """`aimeter up` restarts a killed pricer with backoff; the gateway keeps answering meanwhile."""
    faults = FaultStack(tmp_path)
    upstream = subprocess.Popen([sys.executable, "-m", "aimeter", "fake-upstream", "--port",
                                 str(faults.stack.fake_upstream_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    faults.kafka.start()
    env = {**os.environ, **settings_env(faults.settings)}
    up = subprocess.Popen([sys.executable, "-m", "aimeter", "up"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for_line(lines, "up: serving", up)
        pricer_pid = int(next(ln for ln in lines if "started pricer" in ln).split("pid ")[1].split(",")[0])
        first = Load(faults.stack.gateway_url, faults.key, 200).start().join()
        os.kill(pricer_pid, signal.SIGKILL)
        during = Load(faults.stack.gateway_url, faults.key, 200).start().join()
        assert first.failed == 0
        assert during.failed == 0, "the gateway keeps serving while the pricer is down"
        wait_for_line(lines, "pricer restarted", up)
        assert any("status:" in ln and "pricer down" in ln for ln in lines)
        after = Load(faults.stack.gateway_url, faults.key, 100).start().join()
        fault_row("pricer killed under aimeter up", faults, first.sent + during.sent + after.sent,
                  first.answered | during.answered | after.answered)
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=60)
        upstream.terminate()
        upstream.wait(timeout=10)
        faults.kafka.stop()
    print("".join(ln for ln in lines if "exited" in ln or "restarted" in ln or "status:" in ln))
    assert code == 0, "".join(lines[-30:])


def wait_for_line(lines: list[str], text: str, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in ln for ln in lines):
        assert proc.poll() is None, "".join(lines[-30:])
        assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(lines[-30:])
        time.sleep(0.2)
