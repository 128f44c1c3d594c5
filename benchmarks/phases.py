"""One measurement against one target: saturation, a fixed request rate, or a batch of SSE streams.

Each returns a flat dict that goes into results.json as it is; the summary compares targets
only within the same repetition and upstream latency.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks import httpload, tools
from benchmarks.procs import Background, cpu_seconds
from benchmarks.suts import MODEL, Target

STREAM_CHUNKS = 100


def body(latency_ms: int, *, stream: bool = False, chunks: int = STREAM_CHUNKS, gap_ms: int = 0) -> bytes:
    """The request every target gets; the `fake:` directive sets the upstream's latency and stream shape."""
    directive = f"fake: latency_ms={latency_ms}" + (f" chunks={chunks} gap_ms={gap_ms}" if stream else "")
    request: dict[str, Any] = {"model": MODEL, "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": f"Summarise the benchmark plan in one line. {directive}"}]}
    if stream:
        request["stream"] = True
    return orjson.dumps(request)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _from_python(results: list[tuple[float, httpload.Answer]], seconds: float, tool: str) -> tools.LoadResult:
    ok = [(start, a) for start, a in results if 200 <= a.status < 300 and not a.error]
    lat = [(a.done - start) * 1000 for start, a in ok]
    return tools.LoadResult(tool, seconds, len(results), len(ok), len(results) - len(ok),
                            round(_pct(lat, 0.5), 3), round(_pct(lat, 0.99), 3))


def saturation(target: Target, payload: bytes, *, connections: int, seconds: float, scratch: Path) -> dict[str, Any]:
    """Closed loop with many connections: the most the target serves, and how much of its core it used."""
    pids, background = target.pids(), Background()
    cpu0, wall0 = cpu_seconds(pids), time.perf_counter()
    if tools.find("wrk"):
        result = tools.wrk(target.url, payload, target.headers, connections=connections, seconds=seconds,
                           script_dir=scratch)
    else:
        pool = httpload.Pool(target.url, payload, target.headers)
        raw = httpload.run(httpload.closed_loop(pool, connections, seconds))
        pool.close()
        result = _from_python(raw, seconds, "python-closed-loop")
    cpu = (cpu_seconds(pids) - cpu0) / (time.perf_counter() - wall0)
    return {"tool": result.tool, "connections": connections, "seconds": round(result.seconds, 2),
            "requests": result.sent, "ok": result.ok, "errors": result.errors, "rps": round(result.rps, 1),
            "cpu_cores": round(cpu, 3), "rps_per_core": round(result.rps / cpu, 1) if cpu > 0.05 else None,
            "cpu_us_per_request": round(cpu * 1e6 / result.rps, 1) if result.rps else None,
            "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "background_cores": background.cores()}


def fixed_rate(target: Target, payload: bytes, *, rate: int, seconds: float, scratch: Path,
               use_vegeta: bool = True) -> dict[str, Any]:
    """Open loop at ``rate`` requests/s: latency percentiles as a client at that rate sees them."""
    pids, background = target.pids(), Background()
    cpu0, wall0 = cpu_seconds(pids), time.perf_counter()
    if use_vegeta and tools.find("vegeta"):
        result = tools.vegeta(target.url, payload, target.headers, rate=rate, seconds=seconds, script_dir=scratch)
    else:
        pool = httpload.Pool(target.url, payload, target.headers)
        raw = httpload.run(httpload.open_loop(pool, rate, seconds))
        pool.close()
        result = _from_python(raw, seconds, "python-open-loop")
    cpu = (cpu_seconds(pids) - cpu0) / (time.perf_counter() - wall0)
    return {"tool": result.tool, "rate": rate, "seconds": round(result.seconds, 2), "requests": result.sent,
            "ok": result.ok, "errors": result.errors, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "cpu_cores": round(cpu, 3), "background_cores": background.cores()}


def streams(target: Target, payload: bytes, *, count: int, concurrency: int, deadline_s: float) -> dict[str, Any]:
    """``count`` SSE streams, ``concurrency`` at a time: time to first chunk and the spacing of chunks."""
    pids, background = target.pids(), Background()
    cpu0 = cpu_seconds(pids)
    pool = httpload.Pool(target.url, payload, target.headers, count_events=True)
    raw = httpload.run(httpload.fixed_count(pool, count, concurrency, deadline_s))
    pool.close()
    cpu = cpu_seconds(pids) - cpu0
    ok = [(start, a) for start, a in raw if a.status == 200 and not a.error and a.chunks]
    ttfc = [(a.first_byte - start) * 1000 for start, a in ok]
    total = [(a.done - start) * 1000 for start, a in ok]
    events = sum(n for _, a in ok for _, n in a.chunks)
    mean_delay = [_mean_event_delay(start, a) for start, a in ok]
    return {"streams": len(raw), "ok": len(ok), "errors": len(raw) - len(ok),
            "events_per_stream": round(events / len(ok), 1) if ok else 0,
            "ttfc_p50_ms": round(_pct(ttfc, 0.5), 3), "ttfc_p99_ms": round(_pct(ttfc, 0.99), 3),
            "total_p50_ms": round(_pct(total, 0.5), 3),
            "event_delay_p50_ms": round(statistics.median(mean_delay), 3) if mean_delay else None,
            "cpu_us_per_event": round(cpu * 1e6 / events, 1) if events else None,
            "background_cores": background.cores()}


def _mean_event_delay(start: float, answer: httpload.Answer) -> float:
    """Mean over a stream's SSE events of (arrival - request start), in ms: what each token waits on average."""
    weighted = sum((t - start) * n for t, n in answer.chunks)
    events = sum(n for _, n in answer.chunks)
    return weighted * 1000 / events if events else float("nan")
