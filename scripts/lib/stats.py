"""Percentiles and latency summaries, the same in every script."""
from __future__ import annotations

import math


def percentile(values, q: float) -> float | None:
    """The ``q``-th percentile (0-100): linear interpolation between closest ranks (numpy's
    default); None for no data."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def summary_ms(seconds, with_max: bool = True, digits: int = 2) -> dict[str, float | None]:
    """p50, p95, p99 (and max), mean of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in seconds]
    out = {f"p{q}": _round(percentile(ms, q), digits) for q in (50, 95, 99)}
    if with_max:
        out["max"] = _round(max(ms), digits) if ms else None
    out["mean"] = _round(sum(ms) / len(ms), digits) if ms else None
    return out
