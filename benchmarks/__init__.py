"""Reproducible load and throughput harness: ``make bench`` or ``benchmarks/run.sh`` (see benchmarks/README.md)."""
