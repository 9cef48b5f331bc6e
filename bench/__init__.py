"""Benchmarks that write docs/benchmarks.md; run each from the repository root: `python -m bench.engine_speed`."""
