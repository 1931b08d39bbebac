"""Is a lead real? The system's margins over its peers with their noise, in one run and over seeds.

A backtest scores every approach on the same periods, so a margin is paired: per period, the
system's accuracy minus the peer's. One run's noise is the spread of those per-period
differences (a t interval over the scored periods, taken as draws of "the next stretch of
data"; periods of one drift regime are alike, so the interval is if anything too narrow).
Runs with other seeds (the preset's searches, the models' initial weights, river's learners)
add the run-to-run noise. Over several runs a margin must clear both: the t interval of the
runs' margins (does the lead survive a new seed?) and the t interval over the periods of the
per-period differences averaged over the runs (the seeds score the same periods, so their
agreement says nothing of how the next stretch of data may go). A verdict is ``ahead`` only
when the whole 95 % interval is above zero (both intervals, over runs), ``behind`` when below,
and ``tie`` otherwise: a lead inside the noise is a tie, and is written as one.

The peers are the targets' (``best_rule``: the fixed retraining rule best in hindsight, a
comparison biased *against* the system, since the rule was picked on the very periods it is
scored on; ``no_change``; river's ``arf``) and the oracle over refits, whose margin is the
negative regret. Written here rather than taken from a library: it is a paired t interval
(scipy's t quantile) over a handful of numbers, and the verdict rule is ours to state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["PEERS", "Margin", "across_runs", "margin", "run_margins"]

#: Peer name in the summary -> the accuracy key it is scored under in a period
#: (``best_rule`` is resolved to ``rule:<name>`` of the run's best rule).
PEERS = ("best_rule", "no_change", "arf", "oracle_refit")
#: Confidence of every interval.
LEVEL = 0.95

Margin = dict[str, Any]


def _interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The mean's two-sided t interval at LEVEL (None under two values)."""
    from scipy.stats import t  # type: ignore[import-untyped]

    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = float(t.ppf(0.5 + LEVEL / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def _verdict(interval: tuple[float, float] | None) -> str | None:
    if interval is None:
        return None
    low, high = interval
    return "ahead" if low > 0 else "behind" if high < 0 else "tie"


def margin(system: Sequence[float], peer: Sequence[float]) -> Margin:
    """Paired margin of ``system`` over ``peer`` (accuracies of the same periods), in points."""
    diffs = [100 * (s - p) for s, p in zip(system, peer, strict=True)]
    interval = _interval(diffs)
    return {"points": round(float(np.mean(diffs)), 2) if diffs else None,
            "ci95": _rounded(interval), "verdict": _verdict(interval), "periods": len(diffs),
            "diffs": [round(d, 3) for d in diffs]}


def _rounded(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(interval[0], 2), round(interval[1], 2)]


def _both(a: tuple[float, float] | None, b: tuple[float, float] | None) -> str | None:
    """The verdict both intervals agree on (``tie`` where they do not; None without ``a``)."""
    va, vb = _verdict(a), _verdict(b)
    if va is None:
        return None
    return va if va == vb else "tie"


def run_margins(periods: Sequence[Mapping[str, float]], best_rule: str | None) -> dict[str, Margin]:
    """Margins of one run over each peer, from its scored periods' accuracies (by approach).

    Only periods both the system and the peer were scored on count (a peer missing from a
    period, e.g. river's learners switched off, leaves that peer out).
    """
    keys = {"best_rule": f"rule:{best_rule}" if best_rule else None, "no_change": "no_change",
            "arf": "arf", "oracle_refit": "oracle_refit"}
    out: dict[str, Margin] = {}
    for peer in PEERS:
        key = keys[peer]
        pairs = [(a["system"], a[key]) for a in periods if key and "system" in a and key in a]
        if pairs:
            out[peer] = margin([s for s, _ in pairs], [p for _, p in pairs])
    return out


def _over_runs(interval: tuple[float, float] | None, pooled: tuple[float, float] | None,
               run_verdicts: list[str | None]) -> str | None:
    """The verdict over runs: both intervals must agree; without a pooled one (the runs scored
    other periods), the seeds' interval and every run's own verdict must."""
    if pooled is not None:
        return _both(interval, pooled)
    verdict = _verdict(interval)
    if verdict in (None, "tie"):
        return verdict
    return verdict if all(v == verdict for v in run_verdicts) else "tie"


def across_runs(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What several runs (seeds) say together: each margin per run, its mean, spread and verdict.

    ``summaries``: :func:`~shadow.loop.backtest.report.summarize` outputs (with ``margins``).
    ``ci95`` is the t interval of the runs' margins; ``pooled_ci95`` the t interval over the
    periods of the per-period differences averaged over the runs (None when the runs did not
    score the same periods). The verdict needs both (module doc): a margin whose sign changes
    from seed to seed, or one every seed agrees on but that is inside the periods' noise, is
    a tie.
    """
    out: dict[str, Any] = {"runs": len(summaries),
                           "system_post": [s.get("system_post") for s in summaries]}
    for peer in PEERS:
        runs = [s["margins"][peer] for s in summaries
                if peer in s.get("margins", {}) and s["margins"][peer]["points"] is not None]
        if not runs:
            continue
        points = [r["points"] for r in runs]
        interval = _interval(points)
        diffs = [r.get("diffs") or [] for r in runs]
        pooled = (_interval(list(np.mean(np.array(diffs, dtype=float), axis=0)))
                  if len(runs) == len(summaries) and len({len(d) for d in diffs}) == 1
                  and diffs[0] else None)
        out[peer] = {"points": points, "mean": round(float(np.mean(points)), 2),
                     "min": round(min(points), 2), "max": round(max(points), 2),
                     "ci95": _rounded(interval), "pooled_ci95": _rounded(pooled),
                     "verdict": _over_runs(interval, pooled, [r["verdict"] for r in runs]),
                     "run_verdicts": [r["verdict"] for r in runs]}
    return out
