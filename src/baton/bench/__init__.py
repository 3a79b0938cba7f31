"""Benchmarks: ``baton bench serve`` (stacked vs staged vs step-batched, side by side, in one run)."""
