"""pricer."""
