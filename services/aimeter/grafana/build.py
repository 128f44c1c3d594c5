"""Write the dashboards' JSON files (``aimeter dashboards build``) or check they are current (``--check``).

Grafana provisions dashboards/json/*.json and ``aimeter grafana push`` uploads them; both read the
files, so the files are what a test compares with the code (like schemas/usage_event.v1.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from aimeter.grafana.dashboards import all_dashboards
from aimeter.grafana.model import Json
from aimeter.resources import data_path

DASHBOARDS_DIR = data_path("dashboards")
JSON_DIR = DASHBOARDS_DIR / "json"
DATASOURCE_FILE = DASHBOARDS_DIR / "provisioning" / "datasources" / "clickhouse.yaml"


def render(dashboard: Json) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def rendered() -> dict[Path, str]:
    """Each dashboard file's path and the text it must hold."""
    return {JSON_DIR / f"{d.uid}.json": render(d.to_json()) for d in all_dashboards()}


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in rendered().items():
        target = directory / path.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def stale(directory: Path = JSON_DIR) -> list[Path]:
    """Files that are missing, differ from the code, or belong to no dashboard any more."""
    wanted = {directory / p.name: text for p, text in rendered().items()}
    wrong = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    extra = [p for p in directory.glob("*.json") if p not in wanted]
    return sorted(wrong + extra)


def load_dashboards(directory: Path = JSON_DIR) -> list[Json]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))]
