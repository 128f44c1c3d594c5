"""The pricer's consumer loop against an in-memory broker (tests/support/fake_kafka.py): what it does after a
write, a failed write, a failed commit, a fatal error and a lost session, without Kafka. The same loop
against a real broker: tests/integration/test_pricer_consumer.py."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from aimeter.events import USAGE_TOPIC
from aimeter.pricer import consumer as consumer_module
from aimeter.pricer.consumer import REJOIN_DEADLINE_S, ConsumerLoop
from tests.support.fake_kafka import FakeBroker


class Clock:
    """Stands in for the ``time`` module inside consumer.py: monotonic() is whatever the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(consumer_module, "time", fake)
    monkeypatch.setattr(consumer_module, "MAX_BACKOFF_S", 0.0)  # a failed batch is retried at once
    return fake


class Writer:
    """The batch writer: records what it was given; raises while ``failing`` is positive."""

    def __init__(self, broker: FakeBroker, failing: int = 0) -> None:
        self.broker, self.failing, self.batches = broker, failing, []

    def __call__(self, values: list[bytes]) -> int:
        self.broker.ops.append(("write", list(values)))
        if self.failing:
            self.failing -= 1
            raise RuntimeError("ClickHouse unreachable")
        self.batches.append(list(values))
        return len(values)


def loop_on(broker: FakeBroker, writer: Writer, batch_max: int = 100) -> ConsumerLoop:
    loop = ConsumerLoop(broker.consumer, writer, batch_max=batch_max)
    loop.subscribe()
    return loop


def kinds(ops):
    return [op[0] for op in ops if op[0] in ("write", "commit", "seek")]


def test_a_batch_is_committed_after_it_is_written_at_the_offset_after_its_last_message(clock):
    broker = FakeBroker(USAGE_TOPIC)
    broker.produce(0, b"a", b"b")
    broker.produce(1, b"c")
    loop = loop_on(broker, writer := Writer(broker))
    assert loop.step() == 3
    assert writer.batches == [[b"a", b"b", b"c"]]
    assert kinds(broker.ops) == ["write", "commit"]
    assert broker.committed == {0: 2, 1: 1}
    assert loop.step() == 0  # nothing new: no write, no commit
    assert kinds(broker.ops) == ["write", "commit"]


def test_a_failed_write_seeks_back_to_the_batch_start_commits_nothing_and_redelivers_the_same_batch(clock):
    broker = FakeBroker(USAGE_TOPIC)
    broker.produce(0, b"old")
    loop = loop_on(broker, writer := Writer(broker))
    loop.step()  # offset 0 written and committed
    broker.produce(0, b"x", b"y")
    broker.produce(1, b"z")
    writer.failing = 2
    assert loop.step() == 0
    assert broker.committed == {0: 1}  # nothing past the failed batch
    assert [op for op in broker.ops if op[0] == "seek"] == [("seek", 0, 1), ("seek", 1, 0)]
    assert loop.failures == 1
    assert loop.step() == 0  # the same batch again, failing again
    assert loop.step() == 3
    assert writer.batches == [[b"old"], [b"x", b"y", b"z"]]
    assert broker.committed == {0: 3, 1: 1}
    assert loop.failures == 0
    writes = [op[1] for op in broker.ops if op[0] == "write"]
    assert writes[1:] == [[b"x", b"y", b"z"]] * 3  # redelivered whole, in the same order
    assert kinds(broker.ops)[-2:] == ["write", "commit"]


def test_a_failed_commit_keeps_the_written_batch_and_a_later_commit_covers_it(clock):
    broker = FakeBroker(USAGE_TOPIC)
    broker.produce(0, b"a")
    loop = loop_on(broker, Writer(broker))
    broker.fail_commits = 1
    assert loop.step() == 1  # written; the commit failure is logged, not raised
    assert broker.committed == {}
    broker.produce(0, b"b")
    assert loop.step() == 1
    assert broker.committed == {0: 2}


def test_a_null_value_is_handed_to_the_writer_as_poison_not_skipped(clock):
    broker = FakeBroker(USAGE_TOPIC, partitions=1)
    broker.produce(0, b"a", None)
    loop = loop_on(broker, writer := Writer(broker))
    loop.step()
    assert writer.batches == [[b"a", b""]]
    assert broker.committed == {0: 2}


def test_a_transient_error_is_skipped_and_a_fatal_one_ends_the_loop(clock):
    broker = FakeBroker(USAGE_TOPIC, partitions=1)
    broker.errors.append(KafkaError(KafkaError._TRANSPORT, "broker down"))
    broker.produce(0, b"a")
    loop = loop_on(broker, Writer(broker))
    assert loop.step() == 1
    broker.errors.append(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    with pytest.raises(KafkaException):
        loop.step()


def test_a_lost_session_replaces_the_consumer_only_after_the_rejoin_deadline(clock):
    broker = FakeBroker(USAGE_TOPIC)
    broker.produce(0, b"a")
    loop = loop_on(broker, writer := Writer(broker))
    loop.step()
    first = loop.consumer
    first.lose()
    clock.now += REJOIN_DEADLINE_S - 1
    broker.produce(1, b"b")
    assert loop.step() == 0  # no partitions, still within the deadline: same consumer
    assert loop.consumer is first
    assert loop.replaced == 0
    clock.now += 2
    assert loop.step() == 1  # replaced: the new member is assigned every partition at the committed offsets
    assert loop.consumer is not first
    assert first.closed
    assert loop.replaced == 1
    assert writer.batches == [[b"a"], [b"b"]]
    assert broker.committed == {0: 1, 1: 1}


def test_an_assignment_before_the_deadline_keeps_the_consumer(clock):
    broker = FakeBroker(USAGE_TOPIC)
    loop = loop_on(broker, Writer(broker))
    first = loop.consumer
    first.lose()
    first.subscribe([USAGE_TOPIC], **{f"on_{k}": v for k, v in first.callbacks.items()})  # librdkafka rejoined
    clock.now += REJOIN_DEADLINE_S + 1
    loop.step()
    assert loop.consumer is first
    assert loop.replaced == 0


def test_run_closes_the_consumer_when_stopped(clock):
    broker = FakeBroker(USAGE_TOPIC, partitions=1)
    loop = loop_on(broker, Writer(broker))
    loop.stop()
    loop.run()
    assert loop.consumer.closed
