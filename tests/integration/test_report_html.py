"""The HTML chargeback report: one self-contained file that opens in headless Chromium without errors, with its
three charts really drawn (checked in the DOM Chromium builds and, pixel by pixel, in a screenshot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from PIL import Image

from aimeter.local.stack import settings_env
from aimeter.reports.chargeback import as_text, fetch
from aimeter.reports.chargeback_svg import IDLE_COLOR, PALETTE, SELF_HOSTED_COLOR
from tests.integration.dashboards_seed import MONTH, seed
from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                                             "(apt-get install -y chromium); CI installs it")
RECT = re.compile(r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)" height="([\d.]+)" fill="(#[0-9a-f]{6})">')
WIDTH, HEIGHT = 1280, 2000


@pytest.fixture(scope="module")
def report(metering_store, tmp_path_factory) -> Path:
    seed(metering_store)
    path = tmp_path_factory.mktemp("report") / "chargeback-2026-02.html"
    path.write_text(as_text(fetch(metering_store, MONTH, "team"), "html"), encoding="utf-8")
    return path


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with nothing that reaches the network; console messages go to stderr."""
    command = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
               "--v=0", f"--window-size={WIDTH},{HEIGHT}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def console_messages(stderr: str) -> list[str]:
    """What the page logged (errors, blocked loads, CSP violations); Chromium's own noise is not the page's."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_the_file_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text
    assert not re.search(r"https?://|\bsrc=|\bhref=|@import|url\(", text)
    assert "Content-Security-Policy" in text
    assert text.count("<svg") == 3


def test_it_holds_the_table_and_the_charts(report):
    text = report.read_text(encoding="utf-8")
    assert "<tr class='total'><td>TOTAL</td><td>10</td>" in text
    assert "$13.08" in text  # fully loaded total, $13.075 rounded half up
    titles = re.findall(r"<title>([^<]+)</title>", text)
    assert "03 alpha: $4.38" in titles  # one column per day, stacked by team
    assert {"10 alpha: $1.80", "10 beta: $0.90", "10 idle: $4.50", "15 beta: $0.75", "28 alpha: $0.75"} <= set(titles)
    assert "beta paid APIs: $0.75" in titles  # proprietary versus self-hosted
    assert "alpha reference (paid model): $6.75" in titles  # savings versus reference
    assert "costs $4.50 more" in text  # idle GPU capacity counts against the savings


@needs_chromium
def test_chromium_opens_it_without_errors_and_builds_the_charts(report, tmp_path):
    run = chromium(report, tmp_path, "--dump-dom")
    assert console_messages(run.stderr) == []
    dom = run.stdout
    assert dom.count("<svg") == 3
    assert len(RECT.findall(dom)) == len(RECT.findall(report.read_text(encoding="utf-8")))


@needs_chromium
def test_a_screenshot_shows_every_bar(report, tmp_path):
    """Each bar colour covers (about) the area its rectangles have in the SVG: the charts really rendered."""
    shot = tmp_path / "shot.png"
    run = chromium(report, tmp_path, f"--screenshot={shot}")
    assert console_messages(run.stderr) == []
    expected: Counter[str] = Counter()
    for width, height, color in RECT.findall(report.read_text(encoding="utf-8")):
        expected[color] += round(float(width)) * round(float(height))  # pixels (a count, not money)
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        colors = image.convert("RGB").getcolors(WIDTH * HEIGHT)
    painted = Counter({"#{:02x}{:02x}{:02x}".format(*rgb): count for count, rgb in colors})
    for color in {PALETTE[0], PALETTE[1], IDLE_COLOR, SELF_HOSTED_COLOR}:
        assert expected[color] > 1000, color
        assert 0.9 * expected[color] <= painted[color] <= 1.1 * expected[color] + 200, (color, painted[color])


@needs_chromium
def test_the_running_stack_report_opens_too(stack, clickhouse, tmp_path):
    """The report of what the running stack metered this month, paid and self-hosted (the pricer owns the store)."""
    key = key_for(stack, "support", "helpdesk-bot")
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    for model in ("gpt-4o-mini", "llama-3.1-70b"):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "fake: prompt=2000 completion=300"}])
        raw.parse()
    [(month,)] = wait_for_row(clickhouse, "SELECT formatDateTime(started_at, '%Y-%m') FROM usage_costs FINAL "
                                          "WHERE event_id = {id:UUID}", {"id": raw.headers["x-aimeter-event-id"]})
    env = {**settings_env(stack.settings), "PATH": "/usr/bin:/bin"}
    page = tmp_path / "demo.html"
    for fmt, out in (("html", page), ("json", tmp_path / "demo.json")):
        subprocess.run([sys.executable, "-m", "aimeter", "chargeback", "--month", month, "--format", fmt,
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=60, check=True)
    body = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
    assert Decimal(body["total"]["loaded_cost_usd"]) > 0
    run = chromium(page, tmp_path, "--dump-dom")
    assert console_messages(run.stderr) == []
    assert run.stdout.count("<svg") == 3
    assert len(RECT.findall(run.stdout)) >= len(body["rows"])  # at least one bar per line
