"""The sweep driver: fan candidates out as Ray tasks, store results as they land.

Order of work, and why:
1. :mod:`shadow.sweep.prepare` loads and validates the dataset, cuts the
   holdout and the slices and plans the candidates: all user errors surface
   there, before Ray starts or the store changes. A resume is checked against
   the stored sweep (same data version, holdout and config) before Ray too.
2. Connect to Ray; only then pin the data version (a folder or table source,
   :func:`shadow.data.loader.record_version`) and record the sweep and its
   slices' lineage in the store (one transaction), so an unreachable cluster
   changes nothing.
3. Put the data into Ray's object store once; every task reads it zero-copy.
4. Keep at most ``max_in_flight`` tasks running; collect with ``ray.wait`` as
   each finishes and write it right away (only the driver writes the store).
   A crash after this point loses at most the candidates still running.
5. With MLflow configured (:mod:`shadow.sweep.tracking`), the server is checked
   before step 2 and each stored candidate is then logged as a run; MLflow
   failing mid-sweep never stops the sweep or loses a stored result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selection.records import CandidateRecord, SweepStatus
from selection.store import Store
from shadow.data.loader import record_version
from shadow.sweep.cluster import cluster_cpus, ray_session
from shadow.sweep.ensemble import ENSEMBLE_FAMILY, build_ensemble, failed_ensemble
from shadow.sweep.plan import CandidateSpec
from shadow.sweep.prepare import (  # noqa: F401  (re-exported: the runner's public API)
    Planner,
    PreparedSweep,
    check_resumable,
    make_planner,
    prepare_sweep,
    slice_records,
    sweep_data,
    sweep_record,
)
from shadow.sweep.task import CandidateOutcome, describe_error, run_candidate
from shadow.sweep.tracking import SweepTracker, open_tracker
from shadow.sweep.warm_start import SLICE_PREFIX as WARM_SLICE_PREFIX
from shadow.sweep.warm_start import build_warm_start
from shadow.sweep.workers import check_workers_import

#: Retries of a task whose worker process died (not of a candidate that raised).
WORKER_RETRIES = 3


@dataclass(frozen=True)
class Progress:
    """One candidate landed; counts so far. Handed to the caller's callback."""

    record: CandidateRecord
    done: int
    failed: int
    total: int
    running: int
    elapsed_s: float
    best_accuracy: float | None
    best_candidate_id: str | None


@dataclass
class SweepSummary:
    """What a finished sweep did."""

    sweep_id: str
    planned: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    best_candidate_id: str | None = None
    best_accuracy: float | None = None
    errors: dict[str, str] = field(default_factory=dict)
    #: Where the candidates were tracked in MLflow and how many runs were logged (None: not tracked).
    mlflow: dict[str, Any] | None = None
    #: The warm start (``[warm_start]``): its candidate id, or why there was none (None: not asked).
    warm_start: str | None = None


def run_sweep(
    prepared: PreparedSweep,
    store: Store,
    *,
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    resume: bool = False,
    mlflow: str | None = None,
) -> SweepSummary:
    """Run every planned candidate on Ray and store each result as it lands.

    With ``resume``, the sweep must already be stored (``prepared`` planned
    with its id): only candidates not yet stored run. ``mlflow`` is a tracking
    URI that overrides ``[mlflow]`` and ``$MLFLOW_TRACKING_URI``.
    """
    started = time.perf_counter()
    stored: list[CandidateRecord] = []
    if resume:  # a resume that does not match is refused before Ray starts
        # The ensemble was never planned: it is built again (or found) after the candidates.
        # So is the warm start.
        stored = [r for r in check_resumable(prepared, store) if r.family != ENSEMBLE_FAMILY
                  and not r.slice_id.startswith(WARM_SLICE_PREFIX)]
    # MLflow, then Ray: a server or cluster that cannot be reached leaves the store untouched.
    tracker = open_tracker(prepared, mlflow)
    with ray_session(address):
        # A family named by import path must import on every node, before the store changes.
        check_workers_import(prepared.config.family)
        if prepared.home is not None:
            # A folder or table source pins the version it trains on (idempotent; refuses if
            # its rows changed since they were loaded): later edits to those rows are caught.
            record_version(prepared.dataset, prepared.home)
        if resume:
            store.reopen_sweep(prepared.sweep_id)
        else:
            store.artifacts.put(prepared.holdout_data)
            record = sweep_record(prepared)
            store.create_sweep(tracker.stored_config(record) if tracker else record, slice_records(prepared))
        if tracker is not None:
            tracker.start(store, prepared.sweep_id, stored)
        planner = make_planner(prepared, stored)
        todo = planner.total - len(stored) if prepared.config.search else planner.total
        summary = SweepSummary(prepared.sweep_id, planned=todo, skipped=len(stored))
        if on_start is not None:
            on_start(todo, len(stored))
        status: SweepStatus = "failed"
        try:
            if todo:
                _fan_out(prepared, planner, store, summary, started, on_progress, tracker)
            if prepared.config.ensemble is not None:
                _ensemble(prepared, store, summary, tracker)
            if prepared.config.warm_start is not None:  # after the ensemble: never its member
                _warm_start(prepared, store, summary, tracker)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            summary.seconds = time.perf_counter() - started
            summary.mlflow = tracker.report() if tracker else None
            store.finish_sweep(prepared.sweep_id, status)
    return summary


def _fan_out(
    prepared: PreparedSweep,
    planner: Planner,
    store: Store,
    summary: SweepSummary,
    started: float,
    on_progress: Callable[[Progress], None] | None,
    tracker: SweepTracker | None = None,
) -> None:
    import ray

    remote = ray.remote(num_cpus=1, max_retries=WORKER_RETRIES)(run_candidate)
    data_ref = ray.put(sweep_data(prepared))
    limit = prepared.config.max_in_flight or 2 * cluster_cpus()
    queue: deque[CandidateSpec] = deque()
    running: dict[Any, CandidateSpec] = {}
    try:
        while True:
            queue.extend(planner.ready())
            while queue and len(running) < limit:
                spec = queue.popleft()
                running[remote.remote(spec, data_ref)] = spec
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                spec = running.pop(ref)
                outcome = _collect(ref, spec, prepared.sweep_id)
                store.add_candidate(outcome.record, outcome.artifacts)
                if tracker is not None:  # after the store: MLflow failing loses nothing stored
                    tracker.log(outcome.record, outcome.artifacts)
                planner.tell(spec, outcome.record)
                _tally(summary, outcome.record, prepared.config.devices[0])
                if on_progress is not None:
                    on_progress(Progress(
                        outcome.record, summary.ok + summary.failed, summary.failed,
                        summary.planned, len(running), time.perf_counter() - started,
                        summary.best_accuracy, summary.best_candidate_id,
                    ))
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _ensemble(
    prepared: PreparedSweep, store: Store, summary: SweepSummary, tracker: SweepTracker | None = None,
) -> None:
    """Build and store the sweep's ensemble (``[ensemble]``); a failure is a failed row, never a crash."""
    config = prepared.config.ensemble
    assert config is not None
    summary.planned += 1
    try:
        record = build_ensemble(store, prepared.sweep_id, top_k=config.top_k,
                                weights=config.weights, prepared=prepared)
    except Exception as exc:  # like any candidate's failure: a row, and the sweep goes on
        record = failed_ensemble(prepared.sweep_id, config.top_k, config.weights,
                                 prepared.config.seed, exc)
        if record.candidate_id not in store.candidate_ids(prepared.sweep_id):
            store.add_candidate(record, {})
    if tracker is not None:
        model = record.onnx_sha256
        tracker.log(record, {model: store.artifacts.read_verified(model)} if model else {})
    _tally(summary, record, prepared.config.devices[0])


def _warm_start(
    prepared: PreparedSweep, store: Store, summary: SweepSummary, tracker: SweepTracker | None = None,
) -> None:
    """Continue the champion on the newest rows (``[warm_start]``), if there is one to continue."""
    settings = prepared.config.warm_start
    assert settings is not None
    built = build_warm_start(store, prepared, settings)
    if isinstance(built, str):  # no champion to continue (yet): not a failure of the sweep
        summary.warm_start = f"skipped: {built}"
        return
    summary.planned += 1
    summary.warm_start = built.candidate_id
    if tracker is not None:
        model = built.onnx_sha256
        tracker.log(built, {model: store.artifacts.read_verified(model)} if model else {})
    _tally(summary, built, prepared.config.devices[0])


def _collect(ref: Any, spec: CandidateSpec, sweep_id: str) -> CandidateOutcome:
    """The task's outcome; a task Ray itself lost (worker died past retries) is a failed row."""
    import ray

    try:
        outcome: CandidateOutcome = ray.get(ref)
        return outcome
    except ray.exceptions.RayError as exc:
        record = CandidateRecord(
            candidate_id=spec.candidate_id, sweep_id=sweep_id, slice_id=spec.slice_id,
            family=spec.family, params=spec.params, seed=spec.seed, status="failed",
            error=describe_error(exc).splitlines()[0],
        )
        return CandidateOutcome(record, {})


def _tally(summary: SweepSummary, record: CandidateRecord, primary_device: str) -> None:
    result = record.device(primary_device)
    if record.status != "ok" or result is None or result.status != "ok":
        summary.failed += 1
        summary.errors[record.candidate_id] = record.error or (result.error if result else "") or ""
        return
    summary.ok += 1
    if result.accuracy is not None and (
        summary.best_accuracy is None or result.accuracy > summary.best_accuracy
    ):
        summary.best_accuracy = result.accuracy
        summary.best_candidate_id = record.candidate_id
