"""Gateway CPU per request spent on rate limits, on the gateway's own code (no HTTP, no Kafka).

Runs what the request path runs for a key that has limits: ``RateGate.admit`` (which limits apply, the token
reservation's prompt estimate, the sliding-window check in the key's and the team's windows, the headers),
``Grant.stamp`` on a response start and ``RateGate.settle``; N requests of the benchmark's own chat body, with
the limits set high so every request is admitted (the steady state of a busy key: its windows hold a minute of
entries). The clock advances 0.2 ms per request (5,000 requests/s), so the windows fill and expire as they do
under load. The same loop without a limited key (``admit`` finds no limit: what every request pays when no
limit applies to it) is reported too.

    .venv/bin/python -m benchmarks.ratelimit_micro [N]
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from unittest import mock

import orjson

from aimeter.events import TokenUsage
from aimeter.gateway.keys import new_key
from aimeter.gateway.ratelimit_gate import RateGate, RateLimit, RateLimits
from benchmarks import phases

STEP_NS = 200_000  # 5,000 requests per second


def run(n: int, limited: bool) -> float:
    _, record = new_key("bench", "", "", datetime.now(UTC))
    high = RateLimit(rpm=10**9, tpm=10**12)
    config = RateLimits(teams={"bench": high}, keys={record.key_id: high}) if limited else RateLimits()
    gate = RateGate(config)
    key = replace(record)
    raw = phases.body(0)
    body, size = orjson.loads(raw), len(raw)
    usage = TokenUsage(input_tokens=20, output_tokens=16)
    response_headers = [(b"content-type", b"application/json"), (b"content-length", b"1024")]
    clock = [0]

    def tick() -> int:
        clock[0] += STEP_NS
        return clock[0]

    with mock.patch("aimeter.gateway.ratelimit_gate.time.monotonic_ns", tick):
        for _ in range(min(n, 300_000)):  # fill a minute of window first: the steady state
            gate.settle(gate.admit(key, "bench", body, size, "openai.chat"), usage)
        start = time.process_time()
        for _ in range(n):
            grant = gate.admit(key, "bench", body, size, "openai.chat")
            if grant is not None:
                grant.stamp({"type": "http.response.start", "status": 200, "headers": response_headers})
            gate.settle(grant, usage)
        return (time.process_time() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    off = min(run(n, False) for _ in range(3))
    on = min(run(n, True) for _ in range(3))
    print(f"rate limits, key and team limited (rpm and tpm): {on:.2f} us CPU per request; no limit applies: "
          f"{off:.2f} us ({n} requests, best of 3)")


if __name__ == "__main__":
    main()
