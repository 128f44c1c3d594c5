"""The drill's verdicts: each check fails on the fault it exists to catch (a drill that cannot fail proves nothing)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from benchmarks.drill_report import verdicts


def passing() -> dict[str, Any]:
    return {
        "requests": {"sent": 110, "answered": 100, "refused_401": 10, "other": 0},
        "two_pricers": {"lost": 0, "union_distinct": 100, "duplicated_within_a_store": {"pricer1": 0, "pricer2": 0}},
        "gateway_metrics": {"gw1": {"emitted_total": 60}, "gw2": {"emitted_total": 40}},
        "pricer_takeover_s": 11.0,
        "ledger": {"stored": 100, "lost": 0, "duplicated": 0, "not_answered": 0, "cost_usd": "0.021000000000",
                   "cost_expected_usd": "0.02100"},
        "reconcile": {"exit": 0},
        "revocation": {"gw1": {"last_accepted_after_s": 0.05, "first_refused_after_s": 0.15},
                       "gw2": {"last_accepted_after_s": None, "first_refused_after_s": 0.1}},
        "leftovers": [],
    }


def test_a_clean_run_passes_every_check():
    assert all(verdicts(passing()).values())


@pytest.mark.parametrize(("path", "value", "check"), [
    (("ledger", "stored"), 99, "ledger: stored = answered, 0 lost, 0 duplicated"),
    (("ledger", "duplicated"), 1, "ledger: stored = answered, 0 lost, 0 duplicated"),
    (("ledger", "cost_usd"), "0.020790000000", "ledger: cost sum exact"),
    (("two_pricers", "lost"), 1, "two pricers: every answered event stored, 0 lost"),
    (("two_pricers", "duplicated_within_a_store"), {"pricer1": 0, "pricer2": 2},
     "two pricers: 0 duplicated within a store"),
    (("gateway_metrics", "gw2"), {"emitted_total": 39}, "gateways' emitted counters = answered"),
    (("pricer_takeover_s",), None, "pricer 2 took over pricer 1's partitions"),
    (("reconcile", "exit"), 1, "aimeter reconcile exact"),
    (("revocation", "gw2"), {"last_accepted_after_s": 1.2, "first_refused_after_s": 1.3},
     "revoked key refused by every replica within 1 s"),
    (("revocation", "gw1"), {"last_accepted_after_s": 0.0, "first_refused_after_s": None},
     "revoked key refused by every replica within 1 s"),
    (("leftovers",), ["amdrill-gw1"], "nothing left behind"),
    (("requests", "other"), 3, "no request failed"),
    (("error",), "DrillTimeoutError: the drill ran past its --timeout", "the drill ran to its end"),
])
def test_each_fault_fails_its_check(path, value, check):
    results = copy.deepcopy(passing())
    node = results
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    checks = verdicts(results)
    assert not checks[check]
    assert [name for name, ok in checks.items() if not ok] == [check]
