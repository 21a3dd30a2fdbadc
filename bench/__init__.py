"""Benchmarks: the cost and latency of every hop (see bench/README.md). Run with `just bench` / `python -m bench`."""
