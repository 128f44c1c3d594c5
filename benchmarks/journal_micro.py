"""Gateway CPU per request added by the journal (issue 15 budget: 5 µs), measured on the publisher's own path.

Runs ``KafkaPublisher.publish_encoded`` (journal pwrite + librdkafka ``produce``) for N ~1 KB events, with the
journal on and with its append replaced by a no-op, and reports the difference per event in process CPU time
(every thread: librdkafka's batching counts too). No broker is needed: ``produce`` only enqueues.

    .venv/bin/python -m benchmarks.journal_micro [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aimeter.gateway.publisher import KafkaPublisher


def run(n: int, journal_on: bool, root: Path) -> float:
    publisher = KafkaPublisher("127.0.0.1:1", root / "spool.jsonl", "/bench", delivery_timeout_s=600,
                               journal_dir=root / "journal")
    publisher.journal.recover()
    publisher.journal.open()
    if not journal_on:
        publisher.journal.append = lambda _payload: True  # type: ignore[method-assign]
    payload = b'{"schema_version":1,"event_id":"0193","started_at":"2026-12-06T19:00:00Z"' + b" " * 940 + b"}"
    now = datetime.now(UTC)
    start = time.process_time()
    for i in range(n):
        publisher.publish_encoded(payload, f"e{i}", now, now)
        if i % 4096 == 0:
            publisher.journal.prepare()  # the poll thread's job, here inline and counted
    per_event = (time.process_time() - start) / n * 1e6
    publisher._producer.purge()  # nothing is to be delivered
    return per_event


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for label, on in (("without journal", False), ("with journal", True), ("without journal ", False),
                          ("with journal ", True)):
            root = Path(tmp) / label.strip().replace(" ", "_") / str(len(results))
            results[label] = run(n, on, root)
            print(f"{label.strip():16s} {results[label]:6.2f} us CPU per event (publish_encoded, {n} events)")
    off = min(results["without journal"], results["without journal "])
    on = min(results["with journal"], results["with journal "])
    print(f"journal cost: {on - off:.2f} us CPU per event (budget 5 us)")


if __name__ == "__main__":
    main()
