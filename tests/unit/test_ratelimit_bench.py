"""benchmarks/limits_compare.py: each variant's gateway config says what the variant's name says, and the summary
pairs each repetition with the unlimited gateway's."""

from __future__ import annotations

from benchmarks.limits_compare import VARIANTS, summary, write_config

from aimeter.config import load_config


def test_each_variant_configures_what_its_name_says(tmp_path):
    for variant in VARIANTS:
        config = load_config(write_config(tmp_path, 1234, variant, "keyid12345"))
        limited = config.rate_limits is not None
        budgeted = config.budgets is not None and bool(config.budgets.caps)
        assert (limited, budgeted) == (variant in ("ratelimits", "both"), variant in ("budgets", "both")), variant
        if limited:
            assert set(config.rate_limits.keys) == {"keyid12345"}
            assert set(config.rate_limits.teams) == {"bench"}


def test_the_summary_pairs_repetitions():
    runs = [{"rep": rep, "variant": name, "cpu_us_per_request": cpu, "rps": 1000.0, "errors": 0}
            for rep, (plain, limited) in enumerate([(100.0, 110.0), (200.0, 203.0), (150.0, 158.0)])
            for name, cpu in (("plain", plain), ("ratelimits", limited))]
    text = summary(runs, ["plain", "ratelimits"])
    assert "median of the paired differences +8.0 us" in text
    assert "ratelimits - plain: +8.0 us" in text  # medians 150 and 158
