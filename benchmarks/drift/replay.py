"""The replay loop: walk a time-ordered dataset forward period by period.

At each boundary the shadow system sees only the past (:mod:`drift.shadow_step`);
then every approach is scored on the next period, which no model has seen:
the production file (read as an edge app reads it), the ablation channels'
files (refits behind the strict gate; the strict gate without refit), the first champion (static), the sweep's own
``all`` and recent-window candidates (retrain-all, retrain-recent) and its
rank 1 without a gate (always-promote), each refit up to the boundary when the
system refits (so every rule retrains on the same data the system does), and
the best in hindsight of the sweep's candidates (oracle, as the sweep trained
them) and of the refits (oracle-refit). river's learners and the naive
baselines run afterwards over the same rows.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drift.online import ONLINE_LEARNERS, majority, no_change, prequential
from drift.scoring import ProductionModel, accuracy, predict_labels, read_production
from drift.shadow_step import ABLATIONS, ReplaySettings, StepOutcome, advance
from drift.visible import full_table, write_visible
from selection.records import HOST_DEVICE, CandidateRecord
from selection.store import Store
from shadow.data.catalog import find_manifest
from shadow.data.loader import Dataset, load_dataset

Log = Callable[[str], None]


@dataclass
class PeriodResult:
    """One scored period: rows ``[start, stop)``, what served it, and every approach's accuracy."""

    start: int
    stop: int
    post_drift: bool
    step: StepOutcome
    production_id: str
    production_slice: str
    accuracy: dict[str, float] = field(default_factory=dict)
    #: The candidate behind each sweep-derived approach (its slice), for the table.
    chosen: dict[str, str] = field(default_factory=dict)


@dataclass
class ReplayResult:
    """Everything the report needs."""

    dataset: str
    settings: ReplaySettings
    boundaries: list[int]
    drift_from_row: int | None
    periods: list[PeriodResult]
    seconds: dict[str, float]


def plan_boundaries(
    n_rows: int, settings: ReplaySettings, start: int | None = None, max_periods: int | None = None,
) -> list[int]:
    """Period boundaries (multiples of ``period``) with a whole unseen period after each.

    The first leaves room for the holdout plus the largest recent window, so
    every sweep offers the same slices.
    """
    period = settings.period
    earliest = period * (1 + max(settings.windows, default=1))
    first = max(earliest, -(-(start or 0) // period) * period)
    boundaries = list(range(first, n_rows - period + 1, period))
    return boundaries[:max_periods] if max_periods else boundaries


def _next_accuracy(store: Store, record: CandidateRecord, data: Dataset, truth: np.ndarray,
                   rows: slice) -> float:
    model = store.artifacts.read_verified(str(record.onnx_sha256))
    predicted = predict_labels(model, record.lineage["model_io"], data.features[rows])
    return accuracy(predicted, truth[rows])


def _candidate_scores(store: Store, sweep_id: str, data: Dataset, truth: np.ndarray,
                      rows: slice) -> list[dict[str, Any]]:
    """Every successful candidate of a sweep (refits aside): slice, holdout and next-period accuracy."""
    scored = []
    for record in store.list_candidates(sweep_id):
        result = record.device(HOST_DEVICE)
        if (record.refit_of or record.status != "ok" or result is None or result.status != "ok"
                or not record.onnx_sha256):
            continue
        scored.append({"candidate_id": record.candidate_id, "slice_id": record.slice_id,
                       "holdout": result.accuracy,
                       "next": _next_accuracy(store, record, data, truth, rows)})
    return scored


def _as_deployed(store: Store, pick: dict[str, Any], refits: dict[str, str], data: Dataset,
                 truth: np.ndarray, rows: slice) -> dict[str, Any]:
    """``pick`` as a retraining rule deploys it: its refit up to the boundary, when there is one."""
    if pick["candidate_id"] not in refits:
        return pick
    refit = store.get_candidate(refits[pick["candidate_id"]])
    return {**pick, "candidate_id": refit.candidate_id, "slice_id": refit.slice_id,
            "next": _next_accuracy(store, refit, data, truth, rows)}


def score_period(
    store: Store, home: Path, step: StepOutcome, static: ProductionModel, data: Dataset,
    truth: np.ndarray, settings: ReplaySettings, drift_from_row: int | None,
) -> PeriodResult:
    """Score every sweep-based approach on rows ``[boundary, boundary + period)``."""
    rows = slice(step.boundary, step.boundary + settings.period)
    production = read_production(home)
    scored = _candidate_scores(store, step.sweep_id, data, truth, rows)
    result = PeriodResult(
        start=rows.start, stop=rows.stop,
        post_drift=drift_from_row is not None and rows.start >= drift_from_row,
        step=step, production_id=production.candidate_id,
        production_slice=str(store.get_candidate(production.candidate_id).slice_id),
    )
    served = [("system", production), ("static", static)]
    served += [(channel.replace("-", "_"), read_production(home, channel)) for channel in ABLATIONS
               if (home / "channels" / channel).exists()]
    for name, model in served:
        predicted = predict_labels(model.model, model.manifest["model_io"], data.features[rows])
        result.accuracy[name] = accuracy(predicted, truth[rows])
    # Each candidate as a retraining rule would deploy it (its refit, if any), scored once.
    deployed = {c["candidate_id"]: _as_deployed(store, c, step.refits, data, truth, rows) for c in scored}
    recent = f"recent-{settings.window_rows(settings.recent_window)}"
    picks = {
        "retrain_all": deployed.get(step.slice_bests.get("all", "")),
        "retrain_recent": deployed.get(step.slice_bests.get(recent, "")),
        "always_promote": deployed.get(step.challenger_id or ""),
        "oracle": max(scored, key=lambda c: c["next"], default=None),
        "oracle_refit": max((deployed[c] for c in step.refits if c in deployed),
                            key=lambda c: c["next"], default=None),
    }
    for name, pick in picks.items():
        if pick is not None:
            result.accuracy[name] = pick["next"]
            result.chosen[name] = pick["slice_id"]
    return result


def score_online(result: ReplayResult, data: Dataset, seed: int, log: Log) -> None:
    """Add river's learners and the naive baselines to every period, over the same rows."""
    stop = result.periods[-1].stop
    labels = data.labels[:stop]
    started = time.perf_counter()
    per_row = {"no_change": no_change(labels),
               "majority": majority(labels, result.boundaries, result.settings.period)}
    for name, build in ONLINE_LEARNERS.items():
        log(f"river {name}: prequential over rows 0..{stop - 1}")
        per_row[name] = prequential(build(seed), data.features[:stop], labels, data.feature_names)
    for period in result.periods:
        for name, correct in per_row.items():
            period.accuracy[name] = float(correct[period.start:period.stop].mean())
    result.seconds["online"] = time.perf_counter() - started


def replay(
    dataset: str, settings: ReplaySettings, home: Path, log: Log, *,
    start: int | None = None, max_periods: int | None = None,
) -> ReplayResult:
    """Run the whole replay with one SHADOW_HOME (``home``); Ray must be initialized.

    Raises ValueError when the dataset is too short for one boundary.
    """
    manifest = find_manifest(dataset)
    data = load_dataset(manifest)
    table = full_table(manifest)
    truth = np.asarray(data.classes, dtype=object)[data.labels]
    boundaries = plan_boundaries(data.n_rows, settings, start, max_periods)
    if not boundaries:
        raise ValueError(f"dataset {dataset!r} ({data.n_rows} rows) is too short for periods of "
                         f"{settings.period} rows with windows {settings.windows}; lower --period.")
    result = ReplayResult(data.name, settings, boundaries, manifest.drift_from_row, [], {})
    started = time.perf_counter()
    static: ProductionModel | None = None
    with tempfile.TemporaryDirectory(prefix="drift-replay-") as work, Store.open(home) as store:
        for index, boundary in enumerate(boundaries):
            toml = write_visible(manifest, table, boundary, Path(work) / f"upto-{boundary}")
            step = advance(store, toml, boundary, index, settings)
            if static is None:
                static = read_production(home)  # the first champion, never replaced
            period = score_period(store, home, step, static, data, truth, settings,
                                  manifest.drift_from_row)
            result.periods.append(period)
            log(_progress_line(index, len(boundaries), period))
    result.seconds["shadow"] = time.perf_counter() - started
    score_online(result, data, settings.seed, log)
    return result


def _progress_line(index: int, total: int, period: PeriodResult) -> str:
    step, acc = period.step, period.accuracy
    verdict = "promoted" if step.promoted else "kept champion"
    nan = float("nan")
    return (f"[{index + 1}/{total}] row {step.boundary}: {step.candidates_ok} candidates in "
            f"{step.sweep_seconds:.1f} s, {len(step.refits)} refits; {verdict} (serving "
            f"{period.production_slice}); next period: system {acc['system']:.3f}, refit+strict gate "
            f"{acc.get('refit_improvement', nan):.3f}, gate-only {acc.get('gate_only', nan):.3f}, "
            f"static {acc['static']:.3f}, oracle "
            f"{acc.get('oracle', nan):.3f}, oracle-refit {acc.get('oracle_refit', nan):.3f}")
