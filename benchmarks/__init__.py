"""Benchmarks of the flows service: `.venv/bin/python -m benchmarks` prints every figure."""
