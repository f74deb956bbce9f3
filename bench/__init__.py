"""Benchmarks for statsapi: ``make bench`` (see bench/run.py)."""
