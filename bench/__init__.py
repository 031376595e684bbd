"""Benchmarks: `python -m bench` prints a table and writes docs/PERFORMANCE.md."""
