"""Benchmarks that write docs/benchmarks.md (run them as scripts: `python bench/engine.py`)."""
