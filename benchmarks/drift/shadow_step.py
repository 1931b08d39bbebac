"""One period boundary of the shadow system, through the product's own paths.

With only rows ``[0, boundary)`` visible: a real Ray sweep (recent windows,
expanding, all history; a small Optuna budget per slice) whose holdout is the
most recent visible period, then the champion/challenger gate against the
channel's current model, then ``promote`` when the gate passes. This is what
``shadow sweep run`` followed by ``shadow promote --best`` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selection.errors import NotFoundError
from selection.errors import GateRefused
from selection.gate import promote_through_gate
from selection.leaderboard import best_candidate
from selection.store import Store
from shadow.sweep import config_from_dict, prepare_sweep, run_sweep


@dataclass(frozen=True)
class ReplaySettings:
    """How the shadow system is run at every boundary (the same at each one)."""

    period: int = 365
    #: Recent windows offered as slices, in periods (2, 3 and 5 years for daily rows).
    windows: tuple[int, ...] = (2, 3, 5)
    #: The window the retrain-recent baseline always deploys, in periods.
    recent_window: int = 3
    #: An expanding slice that stops this many periods before the holdout.
    expanding_gap: int = 5
    trials: int = 3
    epochs: int = 10
    seed: int = 0
    #: Allowed latency regression in % for the gate; None turns the guard off.
    latency_guard: float | None = None

    def window_rows(self, periods: int) -> int:
        return periods * self.period


@dataclass(frozen=True)
class StepOutcome:
    """What the shadow system did at one boundary."""

    boundary: int
    sweep_id: str
    sweep_seconds: float
    candidates_ok: int
    challenger_id: str | None
    gate_passed: bool
    gate_reasons: list[str] = field(default_factory=list)
    promoted: bool = False


def slice_tables(pool: int, settings: ReplaySettings) -> list[dict[str, Any]]:
    """The ``[[slices]]`` of one sweep: all history, the recent windows that fit, one expanding."""
    tables: list[dict[str, Any]] = [{"strategy": "all"}]
    tables += [
        {"strategy": "recent", "rows": settings.window_rows(w)}
        for w in settings.windows if settings.window_rows(w) <= pool
    ]
    gap = settings.window_rows(settings.expanding_gap)
    # Expanding slices grow from the oldest row; with count = 2 the larger one is
    # all history (deduplicated by the product) and the other ends `gap` rows earlier.
    if pool - gap >= settings.period:
        tables.append({"strategy": "expanding", "min_rows": settings.period, "step": gap, "count": 2})
    return tables


def sweep_raw(dataset_toml: Path, boundary: int, index: int, settings: ReplaySettings) -> dict[str, Any]:
    """The sweep config of boundary number ``index`` (what a user would write as TOML)."""
    pool = boundary - settings.period
    guards = {} if settings.latency_guard is None else {"latency_ms": settings.latency_guard}
    return {
        "sweep": {
            "name": f"drift-replay-{boundary}",
            "dataset": str(dataset_toml),
            "devices": ["host-cpu"],
            # A new seed each boundary: the same seed would ask every slice's
            # study the same few trials at every boundary.
            "seed": settings.seed + index,
        },
        "holdout": {"rows": settings.period},
        "slices": slice_tables(pool, settings),
        "model": {"family": "mlp", "params": {"epochs": settings.epochs}},
        "search": {
            "trials": settings.trials,
            # One generation per slice: with a handful of trials TPE is still in its
            # random start-up phase, so waiting between generations would only idle cores.
            "parallel": settings.trials,
            "space": {
                "width": {"low": 8, "high": 64},
                "lr": {"low": 1e-3, "high": 3e-2, "log": True},
                "hidden_layers": {"choices": [1, 2]},
            },
        },
        "gate": {"min_improvement": 0.0, "alpha": 0.05, "guards": guards},
    }


def advance(
    store: Store, dataset_toml: Path, boundary: int, index: int, settings: ReplaySettings,
) -> StepOutcome:
    """Sweep the visible past, gate rank 1 against the champion, promote if it passes."""
    prepared = prepare_sweep(config_from_dict(sweep_raw(dataset_toml, boundary, index, settings)))
    started = time.perf_counter()
    summary = run_sweep(prepared, store)
    seconds = time.perf_counter() - started
    base = dict(boundary=boundary, sweep_id=prepared.sweep_id, sweep_seconds=seconds,
                candidates_ok=summary.ok)
    try:
        challenger = best_candidate(store, sweep=prepared.sweep_id)
    except NotFoundError as exc:  # every candidate failed: the champion keeps serving
        return StepOutcome(**base, challenger_id=None, gate_passed=False, gate_reasons=[str(exc)])
    try:
        promote_through_gate(store, challenger, reason=f"drift replay: gate passed at row {boundary}")
    except GateRefused as refused:
        return StepOutcome(**base, challenger_id=challenger, gate_passed=False,
                           gate_reasons=list(refused.decision["reasons"]))
    return StepOutcome(**base, challenger_id=challenger, gate_passed=True, promoted=True)
