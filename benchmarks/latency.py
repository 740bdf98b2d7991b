"""Latency figures shared by the benchmarks."""

from __future__ import annotations

import statistics


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds of latencies in seconds (0 and 0 when there are none)."""
    ordered = sorted(latencies) or [0.0]
    p95 = ordered[max(int(len(ordered) * 0.95) - 1, 0)]
    return statistics.median(ordered) * 1000, p95 * 1000
