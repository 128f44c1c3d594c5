"""Reading a built dashboard panel the way Grafana shows it, for the structure and panel tests."""

from __future__ import annotations

import re


def effective_unit(panel: dict, column: str) -> str | None:
    """The unit Grafana shows for ``column``: the panel's default, then each matching override in order."""
    unit = panel["fieldConfig"]["defaults"].get("unit")
    for override in panel["fieldConfig"]["overrides"]:
        matcher = override["matcher"]
        pattern = matcher["options"].strip("/")
        hit = column == matcher["options"] if matcher["id"] == "byName" else re.search(pattern, column)
        if hit:
            unit = next((p["value"] for p in override["properties"] if p["id"] == "unit"), unit)
    return unit
