"""Percentile summaries of latency samples (milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = (len(sorted_values) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def summarize(samples_ms: Sequence[float], *, lost: int = 0) -> dict[str, Any]:
    """count, lost, min, mean, p50, p90, p99 and max; the numbers are None without samples."""
    values = sorted(samples_ms)
    summary: dict[str, Any] = {"count": len(values), "lost": lost}
    if not values:
        return {
            **summary,
            "min": None,
            "mean": None,
            **{f"p{p}": None for p in PERCENTILES},
            "max": None,
        }
    summary["min"] = round(values[0], 3)
    summary["mean"] = round(sum(values) / len(values), 3)
    for p in PERCENTILES:
        summary[f"p{p}"] = round(percentile(values, p), 3)
    summary["max"] = round(values[-1], 3)
    return summary
