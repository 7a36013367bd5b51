"""Benchmarks: scripts that print figures side by side (see BENCHMARKS.md)."""
