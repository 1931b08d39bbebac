"""Planning a sweep before anything runs: data, holdout, slices, candidates, records.

Everything here is free of side effects, so every user error (a bad config, a
dataset that breaks a rule, a resume that does not match) surfaces before Ray
starts or the store changes. :mod:`shadow.sweep.runner` then executes the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from selection.artifacts.arrays import encode_holdout
from selection.artifacts.content import sha256_bytes
from selection.home import Home
from selection.records import CandidateRecord, HoldoutRecord, SliceRecord, SweepRecord
from selection.signature import SIGNATURE_KEY, ModelSignature
from selection.store import Store
from shadow.data.catalog import find_manifest
from shadow.data.loader import Dataset, load_dataset
from shadow.data.slicing.base import Holdout, Slice, cut_holdout, make_slices, rows_sha256
from shadow.errors import ConfigError
from shadow.models import get_family
from shadow.models.contract import check_on_rows
from shadow.models.external import is_family_path
from shadow.sweep.config import SweepConfig
from shadow.sweep.lineage import code_lineage
from shadow.sweep.plan import CandidateSpec, GridPlanner, new_sweep_id, plan_candidates
from shadow.sweep.search import SearchPlanner
from shadow.sweep.task import SweepData


class Planner(Protocol):
    """Hands out candidates as they become runnable and learns from results."""

    @property
    def total(self) -> int: ...

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
    #: Where the dataset's versions are kept (appended batches, recorded folder/table versions).
    home: Home | None = None
    #: ``[model] baselines``: each baseline family on every slice, known up front.
    baselines: list[CandidateSpec] = field(default_factory=list)

    @property
    def n_planned(self) -> int:
        search = self.config.search
        own = search.trials * len(self.slices) if search else len(self.candidates)
        return own + len(self.baselines)

    @cached_property
    def holdout_data(self) -> bytes:
        """The holdout rows as an artifact (.npz), so selection can re-score any model on them.

        Cached: the sweep record hashes it and the store writes it, and for an
        image holdout it is tens of MB to encode.
        """
        h, ds = self.holdout, self.dataset
        return encode_holdout(ds.features[h.start:h.stop], ds.labels[h.start:h.stop])


def prepare_sweep(
    config: SweepConfig, sweep_id: str | None = None, *, home: Home | None = None,
    data_version: str | None = None,
) -> PreparedSweep:
    """Everything up to, not including, the first side effect.

    ``home`` is where appended batches of the dataset live (``shadow data
    append``): with it the sweep trains on the dataset's latest version (or
    ``data_version``: a version number, fingerprint or fingerprint prefix),
    and records that version's fingerprint; without it, on the catalog's rows
    alone (a folder or table source: its latest version, nothing recorded).
    """
    manifest = find_manifest(config.dataset, relative_to=config.base_dir)
    dataset = load_dataset(manifest, home, data_version)
    holdout = cut_holdout(dataset.n_rows, config.holdout, f"{config.path or 'config'} [holdout]")
    columns = {name: values[:holdout.start] for name, values in dataset.segments.items()}
    slices = make_slices(list(config.slices), holdout.start, columns)
    if is_family_path(config.family):  # a user's family: built, trained a step and exported once, here
        rows = slices[0].rows[:64]
        check_on_rows(get_family(config.family), config.grid[0], dataset.features[rows], dataset.labels[rows],
                      len(dataset.classes), dataset.input_shape, f"{config.path or 'sweep config'} [model]: "
                      f"family {config.family!r}")
    sweep_id = sweep_id or new_sweep_id()
    candidates = [] if config.search else plan_candidates(
        sweep_id, dataset.fingerprint, slices, config.family, config.grid, config.seed
    )
    baselines = [spec for name, params in config.baselines for spec in plan_candidates(
        sweep_id, dataset.fingerprint, slices, name, (params,), config.seed)]
    return PreparedSweep(sweep_id, config, dataset, holdout, slices, candidates, home, baselines)


def make_planner(prepared: PreparedSweep, stored: list[CandidateRecord]) -> Planner:
    """What to run next: the grid less what is stored, or Optuna studies fed what is stored."""
    config = prepared.config
    done = {r.candidate_id for r in stored}
    if config.search is None:
        return GridPlanner([c for c in prepared.candidates + prepared.baselines
                            if c.candidate_id not in done])
    searched = SearchPlanner(
        config.search, prepared.slices, config.family, dict(config.fixed_params or {}),
        get_family(config.family), prepared.sweep_id, prepared.dataset.fingerprint,
        config.seed, [r for r in stored if r.family == config.family],
    )
    return WithBaselines(searched, prepared.baselines, done) if prepared.baselines else searched


class WithBaselines:
    """A search planner plus the baselines: handed out first (those not ``done``), never told
    to a study. ``total`` counts every planned candidate, stored ones too, as the search's does."""

    def __init__(self, search: SearchPlanner, baselines: list[CandidateSpec], done: set[str]) -> None:
        self.search = search
        self.waiting = [c for c in baselines if c.candidate_id not in done]
        self.ids = {c.candidate_id for c in baselines}

    @property
    def total(self) -> int:
        return self.search.total + len(self.ids)

    def ready(self) -> list[CandidateSpec]:
        first, self.waiting = self.waiting, []
        return first + self.search.ready()

    def tell(self, spec: CandidateSpec, record: CandidateRecord) -> None:
        if spec.candidate_id not in self.ids:
            self.search.tell(spec, record)


def sweep_record(prepared: PreparedSweep) -> SweepRecord:
    holdout = prepared.holdout
    return SweepRecord(
        sweep_id=prepared.sweep_id,
        name=prepared.config.name,
        dataset=prepared.dataset.name,
        dataset_fingerprint=prepared.dataset.fingerprint,
        holdout=HoldoutRecord(
            holdout.start, holdout.stop, rows_sha256(holdout.rows),
            data_sha256=sha256_bytes(prepared.holdout_data),
        ),
        config=prepared.config.raw,
        n_planned=prepared.n_planned,
        devices=tuple(prepared.config.devices),
    )


def slice_records(prepared: PreparedSweep) -> list[SliceRecord]:
    return [
        SliceRecord(prepared.sweep_id, s.slice_id, s.strategy, s.params, len(s.rows), s.rows_sha256)
        for s in prepared.slices
    ]


def sweep_data(prepared: PreparedSweep) -> SweepData:
    dataset = prepared.dataset
    # The contract with the edge app; the graph names are selection.signature's.
    signature = ModelSignature(
        features=tuple(dataset.feature_names),
        classes=tuple(dataset.classes),
        target=dataset.manifest.target,
        input_shape=tuple(dataset.input_shape) if dataset.input_shape else None,
        # Earlier rows' labels among the features: the app must send them (the runtime checks).
        label_features=tuple(dataset.label_features),
        label_codes=tuple(dataset.label_codes),
    )
    lineage: dict[str, Any] = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        # Where the data was found, so a refit can load it again from anywhere.
        "dataset_manifest": str(dataset.manifest.path.resolve()),
        "holdout": [prepared.holdout.start, prepared.holdout.stop],
        SIGNATURE_KEY: signature.to_dict(),
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
    if stored.dataset_fingerprint != planned.dataset_fingerprint:
        raise ConfigError(
            f"cannot resume sweep {prepared.sweep_id!r}: it was started on data version "
            f"{stored.dataset_fingerprint[:12]} of dataset {stored.dataset!r} and this run would "
            f"train on {planned.dataset_fingerprint[:12]}; resume it on its own version "
            f"(--data-version {stored.dataset_fingerprint[:12]}, or no --data-version), or start "
            "a new sweep (drop --resume)."
        )
    changes = [
        what for what, same in (
            ("holdout", stored.holdout == planned.holdout),
            # Where runs are tracked ([mlflow], --mlflow) does not change what is trained.
            ("config", _untracked(stored.config) == _untracked(json.loads(json.dumps(planned.config)))),
        ) if not same
    ]
    if changes:
        raise ConfigError(
            f"cannot resume sweep {prepared.sweep_id!r}: its {' and '.join(changes)} differ from "
            "what it was started with; resume with the same config and data, or start a new "
            "sweep (drop --resume)."
        )
    # Refits (shadow.sweep.refit) belong to the sweep's lineage but were never planned by it.
    return [r for r in store.list_candidates(prepared.sweep_id) if not r.refit_of]


def _untracked(config: dict[str, Any]) -> dict[str, Any]:
    """A stored sweep config without its ``[mlflow]`` table (the runner writes the one in force)."""
    return {k: v for k, v in config.items() if k != "mlflow"}
