"""Benchmarks and maintenance scripts (run with `python -m scripts.<name>`)."""
