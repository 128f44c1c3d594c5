"""From raw runs to the published numbers: medians over repetitions, comparisons within a repetition.

"Added" latency is (target - direct) for the same repetition, upstream latency and rate, and
only then the median over repetitions; ratios likewise. So a noisy minute on the shared box
moves both sides of a comparison together instead of favouring whoever ran in a quiet one.
"""

from __future__ import annotations

import statistics
from typing import Any

Runs = list[dict[str, Any]]

TARGETS = {  # issue 6, on this 2-core box with the gateway on one core
    "gateway_rps": 5000.0, "gateway_vs_litellm": 20.0, "added_p50_ms_at_1000": 1.0, "added_p99_ms_at_1000": 3.0,
    "added_ttfc_p99_ms": 2.0, "pricer_events_per_s": 50_000.0, "freshness_p99_ms": 2000.0,
}


def _median(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return round(statistics.median(clean), 3) if clean else None


def _select(runs: Runs, phase: str, **match: Any) -> Runs:
    return [r for r in runs if r["phase"] == phase and all(r.get(k) == v for k, v in match.items())]


def _diff(runs: Runs, phase: str, field: str, target: str, **match: Any) -> float | None:
    """Median over repetitions of (target - direct) for ``field``, paired within each repetition."""
    diffs = []
    for mine in _select(runs, phase, target=target, **match):
        base = _select(runs, phase, target="direct", rep=mine["rep"], **match)
        if base and mine.get(field) is not None and base[0].get(field) is not None:
            diffs.append(mine[field] - base[0][field])
    return _median(diffs)


def _ratio(runs: Runs, latency: int, top: str, bottom: str) -> float | None:
    ratios = []
    for mine in _select(runs, "saturation", target=top, upstream_ms=latency):
        other = _select(runs, "saturation", target=bottom, upstream_ms=latency, rep=mine["rep"])
        if other and other[0]["rps"]:
            ratios.append(mine["rps"] / other[0]["rps"])
    return _median(ratios)


def saturation(runs: Runs, latency: int, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        mine = _select(runs, "saturation", target=name, upstream_ms=latency)
        if mine:
            out[name] = {field: _median([r.get(field) for r in mine]) for field in
                         ("rps", "cpu_cores", "rps_per_core", "cpu_us_per_request", "errors", "background_cores")}
            out[name]["reps"] = [r["rps"] for r in mine]
    return out


def rates(runs: Runs, latency: int, rate: int, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        mine = _select(runs, "rate", target=name, upstream_ms=latency, rate=rate)
        measured = [r for r in mine if "skipped" not in r]
        if not measured:
            if mine:
                out[name] = {"skipped": mine[0]["skipped"]}
            continue
        out[name] = {"p50_ms": _median([r["p50_ms"] for r in measured]),
                     "p99_ms": _median([r["p99_ms"] for r in measured]),
                     "errors": _median([r["errors"] for r in measured]),
                     "over_saturation": any(r.get("over_saturation") for r in measured)}
        if name != "direct":
            for field in ("p50_ms", "p99_ms"):
                out[name][f"added_{field}"] = _diff(runs, "rate", field, name, upstream_ms=latency, rate=rate)
    return out


def stream(runs: Runs, latency: int, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        mine = _select(runs, "stream", target=name, upstream_ms=latency)
        if not mine:
            continue
        row = {f: _median([r[f] for r in mine]) for f in
               ("ttfc_p50_ms", "ttfc_p99_ms", "event_delay_p50_ms", "cpu_us_per_event", "errors", "events_per_stream")}
        if name != "direct":
            for field in ("ttfc_p50_ms", "ttfc_p99_ms", "event_delay_p50_ms"):
                row[f"added_{field}"] = _diff(runs, "stream", field, name, upstream_ms=latency)
        out[name] = row
    return out


def summarize(runs: Runs, names: list[str], latencies: tuple[int, ...], rate_list: tuple[int, ...],
              rss: dict[str, float]) -> dict[str, Any]:
    pricer = _select(runs, "pricer")
    fresh = _select(runs, "freshness")
    summary: dict[str, Any] = {
        "saturation": {str(lat): saturation(runs, lat, names) for lat in latencies},
        "ratios": {str(lat): {f"gateway_vs_{o}": _ratio(runs, lat, "gateway", o) for o in names if o != "gateway"}
                   for lat in latencies},
        "rate": {str(lat): {str(r): rates(runs, lat, r, names) for r in rate_list} for lat in latencies},
        "stream": {str(lat): stream(runs, lat, names) for lat in latencies},
        "peak_rss_mb": rss,
        "pricer": {"events_per_s": _median([r["events_per_s"] for r in pricer]),
                   "reps": [r["events_per_s"] for r in pricer], "events": pricer[0]["events"] if pricer else 0,
                   "start_to_ready_s": _median([r["start_to_ready_s"] for r in pricer]),
                   "cpu_us_per_event": _median([r["cpu_us_per_event"] for r in pricer if r.get("cpu_us_per_event")])},
        "freshness": {"p50_ms": _median([r["p50_ms"] for r in fresh]), "p99_ms": _median([r["p99_ms"] for r in fresh]),
                      "samples_per_rep": fresh[0]["samples"] if fresh else 0},
    }
    summary["targets"] = check_targets(summary)
    return summary


def _get(tree: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def check_targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Each issue-6 target with the measured value (0 ms upstream) and whether it was met."""
    gw0 = ("saturation", "0", "gateway")
    rows = [
        ("gateway saturation RPS (metered, 1 core)", ">=", "gateway_rps", _get(s, *gw0, "rps")),
        ("gateway RPS per core used (CPU-normalized)", ">=", "gateway_rps", _get(s, *gw0, "rps_per_core")),
        ("gateway / LiteLLM RPS, same run", ">=", "gateway_vs_litellm", _get(s, "ratios", "0", "gateway_vs_litellm")),
        ("added p50 at 1,000 RPS (ms)", "<=", "added_p50_ms_at_1000",
         _get(s, "rate", "0", "1000", "gateway", "added_p50_ms")),
        ("added p99 at 1,000 RPS (ms)", "<=", "added_p99_ms_at_1000",
         _get(s, "rate", "0", "1000", "gateway", "added_p99_ms")),
        ("stream: added TTFC p99 (ms)", "<=", "added_ttfc_p99_ms",
         _get(s, "stream", "0", "gateway", "added_ttfc_p99_ms")),
        ("pricer events/s into ClickHouse (1 core)", ">=", "pricer_events_per_s", _get(s, "pricer", "events_per_s")),
        ("freshness p99 (ms)", "<=", "freshness_p99_ms", _get(s, "freshness", "p99_ms")),
    ]
    out = []
    for name, op, key, value in rows:
        target = TARGETS[key]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"target": name, "want": f"{op} {target:g}", "measured": value, "met": met})
    return out
