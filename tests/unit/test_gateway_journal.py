"""The gateway's journal and spool on their own: appends, rolling, torn tails, full disks, counts."""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from aimeter.gateway.journal import (
    Journal,
    hours_in,
    list_segments,
    load_counts,
    read_records,
    save_counts,
    truncate_torn_tail,
)
from aimeter.gateway.spool import Spool


def event(i: int, hour: int = 19) -> bytes:
    return (b'{"schema_version":1,"event_id":"e%d","gateway_id":"gw","started_at":"2026-12-06T%02d:36:22.1Z",'
            b'"ended_at":"2026-12-06T%02d:36:22.2Z"}' % (i, hour, hour))


def test_append_roll_and_read_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024, roll_after_s=3600)
    journal.open()
    for i in range(1000):  # ~110 KB: two segments and part of a third
        assert journal.append(event(i))
        journal.prepare()  # the publisher's thread keeps the next segment ready
    assert journal.appended == 1000
    assert len(journal.closed) == 1
    records = [r for p in list_segments(tmp_path) for r in read_records(p)]
    assert records == [event(i) for i in range(1000)]
    # A closed segment was trimmed to what it holds; the open and the prepared one are preallocated.
    closed = journal.closed[0].path
    assert closed.stat().st_size == sum(len(r) + 1 for r in read_records(closed))


def test_roll_after_time_closes_a_non_empty_segment_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024, roll_after_s=0.0)
    journal.open()
    journal.prepare()
    journal.append(event(1))
    journal.prepare()  # old enough: roll at the next append
    journal.append(event(2))
    assert [read_records(s.path) for s in journal.closed] == [[event(1)]]


def test_full_disk_is_known_before_the_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024, headroom_bytes=8 * 1024)
    journal.open()

    def no_space(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    journal.prepare()  # cannot allocate the next segment
    n = 0
    while journal.can_keep():
        assert journal.append(event(n))
        n += 1
    # What was admitted while can_keep() said yes still fits: the headroom (the loop's last append was one).
    for i in range(8 * 1024 // (len(event(0)) + 1) - 1):
        assert journal.append(event(n + i)), "the headroom must hold events admitted before the refusal"
    while journal.append(event(0)):
        pass
    assert journal.unjournaled == 1
    monkeypatch.undo()
    journal.prepare()  # space again
    assert journal.can_keep()
    assert journal.append(event(99))


def test_torn_tail_and_preallocated_zeros_are_cut_on_recovery(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024)
    journal.open()
    journal.append(event(1))
    journal.append(event(2))
    seg = list_segments(tmp_path)[0]
    with seg.open("r+b") as fh:  # a torn third line, as a failed write could leave
        fh.seek(len(event(1)) + len(event(2)) + 2)
        fh.write(event(3)[:20])
    again = Journal(tmp_path, segment_bytes=64 * 1024)
    recovered = again.recover()
    assert read_records(recovered[0].path) == [event(1), event(2)]
    assert recovered[0].path.read_bytes() == event(1) + b"\n" + event(2) + b"\n"


def test_truncate_torn_tail_of_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    assert truncate_torn_tail(path) == 5
    assert path.read_bytes() == b'{"a":1}\n'


def test_counts_fold_segments_once(tmp_path: Path) -> None:
    from aimeter.gateway.publisher import KafkaPublisher  # noqa: PLC0415

    journal_dir, counts = tmp_path / "gw.journal", tmp_path / "counts.json"
    journal = Journal(journal_dir, segment_bytes=64 * 1024)
    journal.open()
    for i in range(3):
        journal.append(event(i, hour=19))
    journal.append(event(9, hour=20))
    journal.close()
    segment = journal.closed[0]
    assert hours_in(segment.path.read_bytes()) == Counter({"2026-12-06T19:00Z": 3, "2026-12-06T20:00Z": 1})
    save_counts(counts, hours_in(segment.path.read_bytes()), segment.seq)
    assert load_counts(counts)[1] == segment.seq
    # Folded but not deleted yet (a crash in between): the next start counts it once and deletes it.
    publisher = KafkaPublisher("127.0.0.1:1", tmp_path / "gw.jsonl", "/test", counts_path=counts,
                               journal_dir=journal_dir, delivery_timeout_s=60)
    publisher.start()
    assert publisher.emitted_hours() == Counter({"2026-12-06T19:00Z": 3, "2026-12-06T20:00Z": 1})
    assert not segment.path.exists()
    assert publisher.stats.replayed == 0
    publisher.close(timeout=0.1)


def test_old_flat_counts_file_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    path.write_text('{"2026-12-06T19:00Z": 4}')
    assert load_counts(path) == (Counter({"2026-12-06T19:00Z": 4}), 0)


def test_spool_full_and_disk_full_return_false_and_leave_whole_lines(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "gw.jsonl", max_bytes=1024)
    assert spool.append(event(1))
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[:10])  # what a filling disk does

    monkeypatch.setattr(os, "write", short_write)
    assert not spool.append(event(2))
    assert "cannot write the spool" in spool.last_error
    monkeypatch.undo()
    assert spool.path.read_bytes() == event(1) + b"\n"
    while spool.append(event(3)):
        pass
    assert "spool full" in spool.last_error
    assert next(iter(spool.take())) == event(1)
    assert list(spool.take()) == [event(1)] + [event(3)] * 6, "replayed again until finish_replay()"
    spool.finish_replay()
    assert list(spool.take()) == []


def test_spool_cuts_a_torn_line_on_open(tmp_path: Path) -> None:
    path = tmp_path / "gw.jsonl"
    path.write_bytes(event(1) + b"\n" + event(2)[:30])
    spool = Spool(path)
    assert list(spool.take()) == [event(1)]


@pytest.mark.parametrize("n", [20_000])
def test_append_cost_per_event(tmp_path: Path, n: int) -> None:
    """The request path's share: one pwrite of a ~1 KB event into the page cache (budget: 5 us)."""
    journal = Journal(tmp_path, segment_bytes=8 << 20)
    journal.open()
    payload = event(1) + b" " * (1024 - len(event(1)))
    start = time.process_time()
    for _ in range(n):
        journal.append(payload)
        if journal._next is None:
            journal.prepare()
    per_event_us = (time.process_time() - start) / n * 1e6
    print(f"journal append: {per_event_us:.2f} us CPU per 1 KB event")
    assert per_event_us < 20  # generous for a shared CI box; the benchmark reports the real figure


def test_a_due_roll_without_a_prepared_segment_keeps_the_current_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024, roll_after_s=0.0)
    journal.open()
    journal.append(event(1))

    def no_space(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    journal.prepare()  # the roll is due, but no next segment can be allocated
    assert journal.append(event(2)), "the current segment still has room"
    assert not journal.closed


def test_publisher_without_kafka_journals_spools_at_stop_and_counts_once(tmp_path: Path) -> None:
    """No broker at all: every event is journaled; a graceful stop spools them and folds the journal's counts."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from aimeter.gateway.publisher import KafkaPublisher  # noqa: PLC0415

    counts = tmp_path / "counts" / "gw.json"
    publisher = KafkaPublisher("127.0.0.1:1", tmp_path / "spool" / "gw.jsonl", "/test", counts_path=counts,
                               journal_dir=tmp_path / "spool" / "gw.journal", delivery_timeout_s=60)
    publisher.start()
    now = datetime(2026, 12, 6, 19, 36, tzinfo=UTC)
    for i in range(5):
        publisher.publish_encoded(event(i), f"e{i}", now, now)
    assert publisher.metrics()["aimeter_events_journaled_total"] == 5
    assert publisher.emitted_hours() == Counter({"2026-12-06T19:00Z": 5})
    publisher.close(timeout=0.5)
    assert len(read_records(tmp_path / "spool" / "gw.jsonl")) == 5
    assert list_segments(tmp_path / "spool" / "gw.journal") == []  # all spooled: retired
    assert load_counts(counts)[0] == Counter({"2026-12-06T19:00Z": 5})
    assert publisher.emitted_hours() == Counter({"2026-12-06T19:00Z": 5})
