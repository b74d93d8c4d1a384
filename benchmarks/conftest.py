"""Benchmark helpers: record throughput in ``extra_info`` after a pytest-benchmark run."""

from __future__ import annotations

from typing import Any


def record_rate(benchmark: Any, *, n_bits: int | None = None, n_events: int | None = None) -> None:
    """Store bits/s or events/s (from the mean time) in ``benchmark.extra_info``."""
    stats = getattr(benchmark, "stats", None)
    mean = stats.stats.mean if stats is not None and getattr(stats, "stats", None) else None
    if n_bits is not None:
        benchmark.extra_info["n_bits"] = n_bits
        if mean:
            benchmark.extra_info["bits_per_s"] = n_bits / mean
    if n_events is not None:
        benchmark.extra_info["n_events"] = n_events
        if mean:
            benchmark.extra_info["events_per_s"] = n_events / mean
