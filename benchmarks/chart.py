"""Draws chart.png from results.json: ``python benchmarks/chart.py results.json chart.png``.

Runs in benchmarks/.venv-tools (matplotlib is not a dependency of ai-meter itself), so it
imports nothing from the project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"direct": "#8c8c8c", "nginx": "#2f7d32", "gateway": "#1f5fa8", "litellm": "#c0392b"}


def _bars(ax: Any, groups: list[str], names: list[str], value: Any, title: str, ylabel: str, *,
          log: bool = False) -> None:
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [value(g, name) for g in groups]
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width, label=name, color=COLORS.get(name, "#555555"))
        for x, v in zip(xs, values, strict=True):
            if v is not None:
                ax.annotate(f"{v:,.0f}" if v >= 10 else f"{v:.2f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def _get(tree: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def draw(results: dict[str, Any], png: Path) -> None:
    meta, s = results["meta"], results["summary"]
    names = meta["targets"]
    proxies = [n for n in names if n != "direct"]
    lats = [str(x) for x in meta["plan"]["latencies_ms"]]
    rates = [str(r) for r in meta["plan"]["rates"]]
    fig, grid = plt.subplots(2, 2, figsize=(14, 9))
    axes = grid.flatten()
    sat_groups = [f"{lat} ms upstream" for lat in lats]
    _bars(axes[0], sat_groups, names, lambda g, n: _get(s, "saturation", g.split()[0], n, "rps"),
          "Throughput at saturation (one core for the proxy)", "requests/s", log=True)
    _bars(axes[1], sat_groups, names, lambda g, n: _get(s, "saturation", g.split()[0], n, "rps_per_core"),
          "Requests/s per core the target actually used", "requests/s per core", log=True)
    groups = [f"{r} RPS, {lat} ms" for lat in lats for r in rates]
    _bars(axes[2], groups, proxies, lambda g, n: _get(s, "rate", g.split(", ")[1].split()[0], g.split()[0], n,
                                                       "added_p99_ms"),
          "Added latency p99 vs direct (no bar: not run, overloaded)", "ms")
    _bars(axes[3], sat_groups, proxies, lambda g, n: _get(s, "stream", g.split()[0], n, "added_ttfc_p99_ms"),
          "Streams: added time to first chunk, p99", "ms")
    m = meta["machine"]
    fig.suptitle(f"ai-meter vs nginx vs LiteLLM, one core each ({m['nproc']}-core {m['cpu_model']}); "
                 f"medians of {meta['plan']['reps']} reps", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")), Path(sys.argv[2]))
