"""Scraping a /metrics endpoint as Prometheus does (bearer token from the token file) and parsing it with
``prometheus_client``'s own parser, so a malformed exposition fails the test that reads it."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str, token_file: Path) -> list[Sample]:
    token = token_file.read_text(encoding="utf-8").strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def unlabeled(samples: list[Sample]) -> dict[str, float]:
    return {s.name: s.value for s in samples if not s.labels}
