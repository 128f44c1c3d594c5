"""Gateway CPU per request spent on Prometheus metrics (issue 20 budget: 3 µs), on the gateway's own code.

Calls ``Gateway._observe`` (request counter, upstream/added latency and TTFT histograms, token counters) for N
streamed requests spread over 8 teams x 4 models x 2 statuses, plus the three ``perf_counter()`` reads the
request path takes for it (``_proxy`` at the start, ``_serve`` around the upstream call), and reports process
CPU per request. The same loop with ``_observe`` a no-op and no clock reads is subtracted, so what is left is
the metrics' own cost. OpenTelemetry is
off (its default), as in production unless ``AIMETER_OTEL_ENDPOINT`` is set.

    .venv/bin/python -m benchmarks.metrics_micro [N]
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aimeter.config import parse_config
from aimeter.events import Attribution, Status, TokenUsage, UsageSource
from aimeter.gateway.app import Gateway, Request
from aimeter.gateway.proxy import Outcome
from aimeter.gateway.usage import Extracted

CONFIG = """
backends:
  openai: {kind: openai, base_url: "http://127.0.0.1:1/v1", deployment: proprietary, provider: openai}
models:
  gpt-4o-mini: {backend: openai}
  gpt-4o: {backend: openai}
  o3: {backend: openai}
  gpt-4.1: {backend: openai}
"""


class _Sink:
    def publish_encoded(self, *_args: Any) -> None: ...
    def accepting(self) -> bool: return True
    def metrics(self) -> dict[str, float]: return {}


def run(n: int, observe: bool) -> float:
    gateway = Gateway(parse_config(CONFIG), _Sink(), gateway_id="bench", max_body_bytes=1 << 20,
                      upstream_timeout_s=30, keys=None, metrics_token="t")
    if not observe:
        gateway._observe = lambda *_a, **_k: None  # type: ignore[method-assign]
    models = ["gpt-4o-mini", "gpt-4o", "o3", "gpt-4.1"]
    requests = [Request(b"{}", {}, models[i % 4], Attribution(team=f"team-{i % 8}")) for i in range(32)]
    usage = Extracted(TokenUsage(input_tokens=1200, output_tokens=300, cache_read_input_tokens=1024),
                      UsageSource.REPORTED)
    started = datetime.now(UTC)
    outcomes = [Outcome(status=s, http_status=200, extracted=usage, first_token_at=started + timedelta(seconds=0.2),
                        streamed=True) for s in (Status.OK, Status.CLIENT_CANCELLED)]
    clock = time.perf_counter
    start = time.process_time()
    if observe:
        for i in range(n):
            outcome = outcomes[i & 1]
            outcome.began = clock()  # _proxy, at the request's start
            outcome.forward_started = clock()  # _serve, around the upstream call
            outcome.forward_ended = clock()
            gateway._observe(requests[i & 31], "openai", outcome, started=started, stream=True, api="openai.chat")
    else:  # the same loop without anything the metrics added
        for i in range(n):
            outcome = outcomes[i & 1]
            gateway._observe(requests[i & 31], "openai", outcome, started=started, stream=True, api="openai.chat")
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    off = min(run(n, False) for _ in range(3))
    on = min(run(n, True) for _ in range(3))
    print(f"loop without metrics {off:.2f} us, with metrics {on:.2f} us CPU per request ({n} requests, best of 3)")
    print(f"metrics cost: {on - off:.2f} us CPU per request (budget 3 us)")


if __name__ == "__main__":
    main()
