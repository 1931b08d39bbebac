"""One period boundary of the shadow system, through the product's own paths.

With only rows ``[0, boundary)`` visible: a real Ray sweep (recent windows,
expanding, all history; a small Optuna budget per slice) whose holdout is the
most recent visible period, then the champion/challenger gate against the
channel's current model, then ``promote`` when the gate passes. This is what
``shadow sweep run`` followed by ``shadow promote --best --refit`` does: with
``refit`` on (the default), the gated winner ships retrained on its slice plus
the holdout year (:mod:`shadow.sweep.refit`).

Besides the product's own step, each boundary also refits every slice's best
candidate (as Ray tasks; the system's own refit is one of them, so it is not
trained twice): the retrain baselines deploy those, and the hindsight oracle
over them bounds what choosing among refits could reach. Two more channels
take the same challenger for the ablation: ``refit-improvement`` ships refits
behind the strict gate (significantly better), ``gate-only`` ships the
candidate as trained behind the strict gate (the system before refit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selection.errors import GateRefused, NotFoundError
from selection.gate.decision import GatePolicy, promote_through_gate
from selection.leaderboard.frame import best_candidate
from selection.records import HOST_DEVICE, CandidateRecord
from selection.store import Store
from shadow.errors import RefitError
from shadow.sweep import config_from_dict, prepare_sweep, run_sweep
from shadow.sweep.prepare import PreparedSweep
from shadow.sweep.refit import RefitPlan, finish_refit, plan_refit, refit_candidate
from shadow.sweep.task import run_candidate

#: Ablation channels: channel -> (refit?, gate requirement). Production follows the settings.
ABLATIONS = {"refit-improvement": (True, "improvement"), "gate-only": (False, "improvement")}


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
    #: Ship the gated winner refit on its slice plus the holdout (``promote --refit``).
    refit: bool = True
    #: The gate's ``require``: "no-regression" suits refits (they are a holdout fresher
    #: than the candidate the gate judges), "improvement" is the strict default.
    require: str = "no-regression"

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
    #: Channel -> whether it promoted here, for the :data:`ABLATIONS` channels.
    ablations: dict[str, bool] = field(default_factory=dict)
    #: Slice id -> its candidate with the best holdout accuracy (what retraining on it deploys).
    slice_bests: dict[str, str] = field(default_factory=dict)
    #: Parent candidate id -> its refit's id, for every slice's best candidate refit here.
    refits: dict[str, str] = field(default_factory=dict)
    #: Parent candidate id -> why its refit was refused (it then is not deployed refit).
    refit_errors: dict[str, str] = field(default_factory=dict)


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
        "gate": {"min_improvement": 0.0, "alpha": 0.05, "guards": guards, "require": settings.require},
    }


def slice_bests(store: Store, sweep_id: str) -> dict[str, str]:
    """Slice id -> its candidate with the best holdout accuracy (what retraining on it deploys)."""
    best: dict[str, tuple[float, CandidateRecord]] = {}
    for record in store.list_candidates(sweep_id):
        result = record.device(HOST_DEVICE)
        if record.refit_of or record.status != "ok" or result is None or result.accuracy is None:
            continue
        if record.slice_id not in best or result.accuracy > best[record.slice_id][0]:
            best[record.slice_id] = (result.accuracy, record)
    return {slice_id: record.candidate_id for slice_id, (_, record) in best.items()}


def refit_all(store: Store, prepared: PreparedSweep,
              parents: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Refit ``parents`` (of sweep ``prepared``) as parallel Ray tasks; the driver stores them. Ids, refusals."""
    import ray

    remote = ray.remote(num_cpus=1)(run_candidate)
    plans: dict[Any, RefitPlan] = {}
    done: dict[str, str] = {}
    errors: dict[str, str] = {}
    for parent in parents:
        plan = plan_refit(store, parent, prepared=prepared)
        if plan.stored is not None:
            done[parent] = plan.stored.candidate_id
        else:
            plans[remote.remote(plan.spec, plan.data)] = plan
    for ref, plan in plans.items():
        try:
            done[plan.parent.candidate_id] = finish_refit(store, plan, ray.get(ref)).candidate_id
        except RefitError as exc:
            errors[plan.parent.candidate_id] = str(exc)
    return done, errors


def _gate(store: Store, challenger: str, boundary: int, channel: str, refit: bool,
          gate: GatePolicy | None = None) -> tuple[bool, bool, list[str]]:
    """Gate ``challenger`` into ``channel`` (the product's path): passed?, promoted?, reasons.

    ``gate`` None: the sweep's own ``[gate]`` table, as ``shadow promote`` reads it.
    """
    try:
        promote_through_gate(
            store, challenger, channel=channel, reason=f"drift replay: gate passed at row {boundary}",
            refit=(lambda cid: refit_candidate(store, cid).candidate_id) if refit else None, gate=gate,
        )
    except GateRefused as refused:
        return False, False, list(refused.decision.reasons)
    except RefitError as exc:  # the gate passed but the refit failed its checks: nothing changed
        return True, False, [str(exc)]
    return True, True, []


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
    bests = slice_bests(store, prepared.sweep_id)
    refits: dict[str, str] = {}
    refit_errors: dict[str, str] = {}
    if settings.refit:
        # Rank 1 too: on a tie in accuracy the policy's tie-breakers may pick another of its
        # slice's candidates than slice_bests does, and always-promote deploys rank 1's refit.
        refits, refit_errors = refit_all(store, prepared, list(dict.fromkeys([challenger, *bests.values()])))
    passed, promoted, reasons = _gate(store, challenger, boundary, "production", settings.refit)
    guards = {} if settings.latency_guard is None else {"latency_ms": settings.latency_guard}
    ablations = {
        channel: _gate(store, challenger, boundary, channel, refit and settings.refit,
                       GatePolicy(require=require, guards=guards))[1]
        for channel, (refit, require) in ABLATIONS.items()
    }
    return StepOutcome(**base, challenger_id=challenger, gate_passed=passed,
                       gate_reasons=reasons, promoted=promoted, ablations=ablations,
                       slice_bests=bests, refits=refits, refit_errors=refit_errors)
