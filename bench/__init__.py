"""Benchmarks for geo-tui against real CNCF Distribution; run them from the repository root."""
