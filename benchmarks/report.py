"""results.json (everything, raw runs included) and results.md (the tables the README quotes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _added(row: dict[str, Any] | None, p50: str, p99: str) -> str:
    if not row:
        return "–"
    if "skipped" in row:
        return "overloaded"
    mark = " †" if row.get("over_saturation") else ""
    return f"{_fmt(row.get(p50))} / {_fmt(row.get(p99))}{mark}"


def _proxy_table(summary: dict[str, Any], latency: str, names: list[str], rates: list[str]) -> list[str]:
    sat, streams, rss = summary["saturation"][latency], summary["stream"][latency], summary["peak_rss_mb"]
    head = ["target", "RPS at saturation", "SUT cores used", "RPS per core", "CPU µs per request",
            "other tenants (cores)",
            *(f"added p50 / p99 at {int(r):,} RPS (ms)" for r in rates),
            "stream: added TTFC p50 / p99 (ms)", "stream: added per-chunk delay (ms)", "CPU µs per chunk",
            "peak RSS (MiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        s, st = sat.get(name, {}), streams.get(name, {})
        cells = [name if name != "direct" else "direct (no proxy)", _fmt(s.get("rps"), 0), _fmt(s.get("cpu_cores")),
                 _fmt(s.get("rps_per_core"), 0), _fmt(s.get("cpu_us_per_request"), 0),
                 _fmt(s.get("background_cores"))]
        for rate in rates:
            row = summary["rate"][latency][rate].get(name)
            cells.append("baseline" if name == "direct" and row and "skipped" not in row
                         else _added(row, "added_p50_ms", "added_p99_ms"))
        cells += ["baseline" if name == "direct" else _added(st, "added_ttfc_p50_ms", "added_ttfc_p99_ms"),
                  "baseline" if name == "direct" else _fmt(st.get("added_event_delay_p50_ms"), 3),
                  _fmt(st.get("cpu_us_per_event"), 1) if name != "direct" else "–",
                  _fmt(rss.get(name if name != "direct" else "fake-upstream"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _absolute_table(summary: dict[str, Any], latency: str, names: list[str], rates: list[str]) -> list[str]:
    head = ["target", *(f"p50 / p99 at {int(r):,} RPS (ms)" for r in rates), "stream TTFC p50 / p99 (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name] + [_added(summary["rate"][latency][r].get(name), "p50_ms", "p99_ms") for r in rates]
        cells.append(_added(summary["stream"][latency].get(name), "ttfc_p50_ms", "ttfc_p99_ms"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_md(results: dict[str, Any]) -> str:
    meta, summary = results["meta"], results["summary"]
    names, rates = meta["targets"], [str(r) for r in meta["plan"]["rates"]]
    m = meta["machine"]
    out = [
        "# ai-meter benchmark results", "",
        f"Reproduce with: `{meta['command']}` (from the repository root; {meta['plan']['name']} plan, "
        f"{meta['plan']['reps']} repetitions, {meta['duration_s'] / 60:.1f} min).", "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; started {meta['started_at']}.", "",
        f"Layout: {meta['layout']}", "",
        f"Load generators: {', '.join(meta['tools'])}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
        "Every number is the median of the repetitions; \"added\" values and ratios are computed against "
        "the direct run of the same repetition first. † the offered rate was above that target's saturation "
        "in at least one repetition (its queue grew during the run). \"overloaded\": the rate is more than twice "
        "its saturation, so it was not run (an open loop would only measure its own queue).", "",
    ]
    if meta.get("skipped"):
        out += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items()), ""]
    for latency in [str(x) for x in meta["plan"]["latencies_ms"]]:
        out += [f"## Upstream latency {latency} ms", "", *_proxy_table(summary, latency, names, rates), "",
                "Absolute client-side latencies:", "", *_absolute_table(summary, latency, names, rates), ""]
        ratios = summary["ratios"][latency]
        out += ["Throughput ratios (same repetition): "
                + ", ".join(f"{k.replace('_', ' ')} {_fmt(v, 1)}x" for k, v in ratios.items()), ""]
    p, f = summary["pricer"], summary["freshness"]
    out += ["## Metering pipeline", "",
            "| measure | value |", "|---|---|",
            f"| pricer ingest, Kafka → ClickHouse, 1 core (events/s) | {_fmt(p['events_per_s'], 0)} "
            f"(reps: {', '.join(_fmt(x, 0) for x in p['reps'])}; {_fmt(p['events'])} events) |",
            f"| pricer CPU per event, all threads incl. the embedded ClickHouse's (µs) | "
            f"{_fmt(p.get('cpu_us_per_event'), 1)} |",
            f"| freshness p50 / p99, response end → priced row visible (ms) | {_fmt(f['p50_ms'], 0)} / "
            f"{_fmt(f['p99_ms'], 0)} ({f['samples_per_rep']} requests per rep) |", "",
            "## Targets (issue 6; 0 ms upstream)", "", "| target | want | measured | met |", "|---|---|---|---|"]
    for row in summary["targets"]:
        met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
        out.append(f"| {row['target']} | {row['want']} | {_fmt(row['measured'])} | {met} |")
    noise = ", ".join(f"rep {r['rep']}: core0 {r['core0']:.2f}, core1 {r['core1']:.2f}" for r in results["runs"]
                      if r["phase"] == "cpu_available")
    retried = sum(1 for r in results["runs"] if r.get("attempts", 1) > 1)
    out += ["", f"Shared box: share of a core a busy loop got just before each repetition ({noise}); "
            "below 1.00 another tenant was using that core. Before each run the harness waited for other "
            f"tenants to go quiet ({meta.get('waited_for_other_tenants_s', 0):.0f} s in all) and measured "
            f"again any run they disturbed ({retried} runs); \"other tenants\" is the median number of cores "
            "they used during the kept runs.", ""]
    return "\n".join(out)


def write(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(render_md(results), encoding="utf-8")
