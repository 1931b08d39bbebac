"""Pareto fronts: candidates no other candidate beats on every metric at once.

The leaderboard's front is over (accuracy higher, latency lower, size lower)
among the eligible rows of one device; the report plots accuracy against
latency and marks it. Rows missing a metric are not on the front.
"""

from __future__ import annotations

import numpy as np


def pareto_mask(maximize: np.ndarray, *minimize: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points.

    A point is dominated when another is at least as good on every metric and
    strictly better on one; equal points do not dominate each other (both stay).
    Works by repeated elimination: the best point by ``maximize`` (ties broken
    by the others) is always on the front, and one vectorised pass removes
    everything it dominates, so the loop runs once per front point.
    """
    up = np.asarray(maximize, dtype="float64")
    downs = [np.asarray(m, dtype="float64") for m in minimize]
    n = len(up)
    valid = ~np.isnan(up)
    for down in downs:
        valid &= ~np.isnan(down)
    on_front = np.zeros(n, dtype=bool)
    keys = [*(d for d in reversed(downs)), -up]
    remaining = np.flatnonzero(valid)
    remaining = remaining[np.lexsort([k[remaining] for k in keys])] if remaining.size else remaining
    while remaining.size:
        best = remaining[0]
        on_front[best] = True
        rest = remaining[1:]
        weakly = up[rest] <= up[best]
        strictly = up[rest] < up[best]
        for down in downs:
            weakly &= down[rest] >= down[best]
            strictly |= down[rest] > down[best]
        remaining = rest[~(weakly & strictly)]
    return on_front
