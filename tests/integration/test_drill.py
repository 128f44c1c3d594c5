"""The many-hosts drill, shortened for CI (164 and 276 s in two runs on this shared box): a three-node Kafka
cluster, two gateways on their own network namespaces, two pricers in one group; a node killed and restarted, a
gateway host cut off from Kafka, a pricer killed, a key revoked, all under load. Every answered request must be
stored exactly once.

``make drill`` runs the same code with the full timings (30 s cut-off) and commits its results. Without root or
``ip netns`` the drill falls back to loopback ports and skips the cut-off (it says so in its results).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root, out = tmp_path_factory.mktemp("drill"), tmp_path_factory.mktemp("drill-out")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.drill", "--root", str(root / "run"), "--out", str(out),
         "--cut-s", "10", "--broker-down-s", "10", "--settle-s", "5", "--rate", "20", "--probe-rate", "10",
         "--timeout", "600"],
        cwd=REPO, capture_output=True, text=True, timeout=700, check=False)
    results = json.loads((out / "drill.json").read_text()) if (out / "drill.json").is_file() else {}
    return {"code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, **results}


def test_every_check_of_the_drill_passes(drill):
    failed = [name for name, ok in drill.get("checks", {}).items() if not ok]
    output = f"{drill['stdout'][-4000:]}\n{drill['stderr'][-3000:]}"
    assert not failed, f"failed: {failed}\n{output}"
    assert drill["code"] == 0, output


def test_answered_equals_stored_in_the_one_ledger(drill):
    results = drill["results"]
    answered = results["requests"]["answered"]
    assert answered > 1000  # the faults happened under real load
    assert results["ledger"]["stored"] == answered
    assert results["ledger"]["lost"] == results["ledger"]["duplicated"] == 0
    assert results["two_pricers"]["lost"] == 0


def test_the_faults_really_happened(drill):
    results = drill["results"]
    assert results["pricer_takeover_s"] is not None  # the surviving pricer held every partition
    assert results["isr_restored_s"] is not None  # the restarted node caught up
    assert results["requests"]["refused_401"] > 0  # the revoked key was refused
    if results["hosts"].startswith("network namespaces"):
        assert results["cut_off"] == "10 s"
        assert results["leftovers"] == []
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert "amdrill" not in netns
