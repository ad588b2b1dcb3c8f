"""Benchmarks behind ``warpdiff bench``: each module has ``run_benchmark(quick) -> dict``."""
