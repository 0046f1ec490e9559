"""Benchmarks: `make bench` (python -m benchmarks.run_all) prints every table from one run."""
