"""Benchmarks, run from the repository root as ``python -m bench.<name>``; their results
are in ``bench/results/``."""
