"""The sweep driver: plan, fan candidates out as Ray tasks, store results as they land.

Order of work, and why:
1. Load and validate the dataset, cut the holdout, cut the slices, plan the
   candidates: all user errors surface here, before Ray starts or the store
   changes.
2. Record the sweep and its slices' lineage in the store (one transaction).
3. Put the data into Ray's object store once; every task reads it zero-copy.
4. Keep at most ``max_in_flight`` tasks running; collect with ``ray.wait`` as
   each finishes and write it right away (only the driver writes the store).
   A crash after this point loses at most the candidates still running.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from selection.arrays import encode_holdout
from selection.artifacts import sha256_bytes
from selection.records import CandidateRecord, HoldoutRecord, SliceRecord, SweepRecord
from selection.store import Store
from shadow.errors import ConfigError
from shadow.data.catalog import find_manifest
from shadow.data.loader import Dataset, load_dataset
from shadow.data.slices import Holdout, Slice, cut_holdout, make_slices, rows_sha256
from shadow.model_io import INPUT_NAME, OUTPUT_NAME
from shadow.lineage import code_lineage
from shadow.sweep.cluster import cluster_cpus, ray_session
from shadow.sweep.config import SweepConfig
from shadow.models import get_family
from shadow.sweep.plan import CandidateSpec, GridPlanner, new_sweep_id, plan_candidates
from shadow.sweep.search import SearchPlanner
from shadow.sweep.task import CandidateOutcome, SweepData, describe_error, run_candidate

#: Retries of a task whose worker process died (not of a candidate that raised).
WORKER_RETRIES = 3


class Planner(Protocol):
    """Hands out candidates as they become runnable and learns from results."""

    total: int

    def ready(self) -> list[CandidateSpec]: ...

    def tell(self, spec: CandidateSpec, record: CandidateRecord) -> None: ...


@dataclass(frozen=True)
class PreparedSweep:
    """A sweep fully planned and validated, not yet started."""

    sweep_id: str
    config: SweepConfig
    dataset: Dataset
    holdout: Holdout
    slices: list[Slice]
    #: Grid candidates, known up front (empty when Optuna asks them as it goes).
    candidates: list[CandidateSpec]

    @property
    def n_planned(self) -> int:
        search = self.config.search
        return search.trials * len(self.slices) if search else len(self.candidates)


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


def prepare_sweep(config: SweepConfig, sweep_id: str | None = None) -> PreparedSweep:
    """Everything up to, not including, the first side effect."""
    manifest = find_manifest(config.dataset, relative_to=config.base_dir)
    dataset = load_dataset(manifest)
    holdout = cut_holdout(dataset.n_rows, config.holdout, f"{config.path or 'config'} [holdout]")
    columns = {name: values[:holdout.start] for name, values in dataset.segments.items()}
    slices = make_slices(list(config.slices), holdout.start, columns)
    sweep_id = sweep_id or new_sweep_id()
    candidates = [] if config.search else plan_candidates(
        sweep_id, dataset.fingerprint, slices, config.family, config.grid, config.seed
    )
    return PreparedSweep(sweep_id, config, dataset, holdout, slices, candidates)


def make_planner(prepared: PreparedSweep, stored: list[CandidateRecord]) -> Planner:
    """What to run next: the grid less what is stored, or Optuna studies fed what is stored."""
    config = prepared.config
    if config.search is None:
        done = {r.candidate_id for r in stored}
        return GridPlanner([c for c in prepared.candidates if c.candidate_id not in done])
    return SearchPlanner(
        config.search, prepared.slices, config.family, dict(config.fixed_params or {}),
        get_family(config.family), prepared.sweep_id, prepared.dataset.fingerprint,
        config.seed, stored,
    )


def holdout_bytes(prepared: PreparedSweep) -> bytes:
    """The holdout rows as an artifact, so selection can re-score any model on them."""
    h, ds = prepared.holdout, prepared.dataset
    return encode_holdout(ds.features[h.start:h.stop], ds.labels[h.start:h.stop])


def sweep_record(prepared: PreparedSweep) -> SweepRecord:
    holdout = prepared.holdout
    return SweepRecord(
        sweep_id=prepared.sweep_id,
        name=prepared.config.name,
        dataset=prepared.dataset.name,
        dataset_fingerprint=prepared.dataset.fingerprint,
        holdout=HoldoutRecord(
            holdout.start, holdout.stop, rows_sha256(holdout.rows),
            data_sha256=sha256_bytes(holdout_bytes(prepared)),
        ),
        config=prepared.config.raw,
        n_planned=prepared.n_planned,
    )


def slice_records(prepared: PreparedSweep) -> list[SliceRecord]:
    return [
        SliceRecord(prepared.sweep_id, s.slice_id, s.strategy, s.params, len(s.rows), s.rows_sha256)
        for s in prepared.slices
    ]


def sweep_data(prepared: PreparedSweep) -> SweepData:
    dataset = prepared.dataset
    model_io = {
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "features": list(dataset.feature_names),
        "classes": list(dataset.classes),
        "target": dataset.manifest.target,
        "input_shape": list(dataset.input_shape) if dataset.input_shape else None,
    }
    lineage: dict[str, Any] = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "holdout": [prepared.holdout.start, prepared.holdout.stop],
        "model_io": model_io,
        **code_lineage(),
    }
    return SweepData(
        sweep_id=prepared.sweep_id,
        features=dataset.features,
        labels=dataset.labels,
        holdout_start=prepared.holdout.start,
        holdout_stop=prepared.holdout.stop,
        slice_rows={s.slice_id: s.rows for s in prepared.slices},
        n_classes=len(dataset.classes),
        devices=prepared.config.devices,
        lineage=lineage,
        input_shape=dataset.input_shape,
    )


def check_resumable(prepared: PreparedSweep, store: Store) -> list[CandidateRecord]:
    """The candidates a stored sweep already has; refuse if the plan changed.

    Candidate ids hash the sweep id, the rows, the model and the seed, so the
    same config and data plan the same ids, and finished ones are skipped.
    """
    stored = store.get_sweep(prepared.sweep_id)
    planned = sweep_record(prepared)
    changes = [
        what for what, same in (
            ("dataset", stored.dataset_fingerprint == planned.dataset_fingerprint),
            ("holdout", stored.holdout == planned.holdout),
            ("config", stored.config == json.loads(json.dumps(planned.config))),
        ) if not same
    ]
    if changes:
        raise ConfigError(
            f"cannot resume sweep {prepared.sweep_id!r}: its {' and '.join(changes)} differ from "
            "what it was started with; resume with the same config and data, or start a new "
            "sweep (drop --resume)."
        )
    return store.list_candidates(prepared.sweep_id)


def run_sweep(
    prepared: PreparedSweep,
    store: Store,
    *,
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    resume: bool = False,
) -> SweepSummary:
    """Run every planned candidate on Ray and store each result as it lands.

    With ``resume``, the sweep must already be stored (``prepared`` planned
    with its id): only candidates not yet stored run.
    """
    started = time.perf_counter()
    # Connect first: a cluster that cannot be reached must leave the store untouched.
    with ray_session(address):
        stored: list[CandidateRecord] = []
        if resume:
            stored = check_resumable(prepared, store)
            store.reopen_sweep(prepared.sweep_id)
        else:
            store.artifacts.put(holdout_bytes(prepared))
            store.create_sweep(sweep_record(prepared), slice_records(prepared))
        planner = make_planner(prepared, stored)
        todo = planner.total - len(stored) if prepared.config.search else planner.total
        summary = SweepSummary(prepared.sweep_id, planned=todo, skipped=len(stored))
        if on_start is not None:
            on_start(todo, len(stored))
        status = "failed"
        try:
            if todo:
                _fan_out(prepared, planner, store, summary, started, on_progress)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            summary.seconds = time.perf_counter() - started
            store.finish_sweep(prepared.sweep_id, status)
    return summary


def _fan_out(
    prepared: PreparedSweep,
    planner: Planner,
    store: Store,
    summary: SweepSummary,
    started: float,
    on_progress: Callable[[Progress], None] | None,
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
