"""fake_upstream."""
