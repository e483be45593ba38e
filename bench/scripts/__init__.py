"""Benchmark scripts, each runnable as ``python -m bench.scripts.NAME --help``."""
