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
    Rows missing a metric (NaN) are never on the front. Works by repeated
    elimination: the best remaining point by ``maximize`` (ties broken by the
    others, in order) is on the front, and one vectorised pass removes
    everything it dominates and takes its equals onto the front, so the loop
    runs once per distinct front point. The remaining points are kept as
    compact arrays (no sort, no gathers), which matters at 100,000 rows.
    """
    up = np.asarray(maximize, dtype="float64")
    downs = [np.asarray(m, dtype="float64") for m in minimize]
    on_front = np.zeros(len(up), dtype=bool)
    valid = ~np.isnan(up)
    for down in downs:
        valid &= ~np.isnan(down)
    index = np.flatnonzero(valid)
    up = up[index]
    downs = [down[index] for down in downs]
    while index.size:
        best = np.flatnonzero(up == up.max())
        for down in downs:
            if best.size == 1:
                break
            best = best[down[best] == down[best].min()]
        b = best[0]
        weakly = up <= up[b]
        strictly = up < up[b]
        for down in downs:
            weakly &= down >= down[b]
            strictly |= down > down[b]
        on_front[index[weakly & ~strictly]] = True  # the best point and its equals
        keep = ~weakly  # what the best point neither dominates nor equals
        index, up = index[keep], up[keep]
        downs = [down[keep] for down in downs]
    return on_front
