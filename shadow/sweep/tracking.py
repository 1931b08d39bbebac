"""A sweep's candidates as MLflow runs, logged by the driver as results stream back.

Which MLflow: ``--mlflow URI`` > ``[mlflow] tracking_uri`` > ``$MLFLOW_TRACKING_URI``
(:func:`selection.tracking.settings.resolve`); none: nothing is logged. The
experiment is ``[mlflow] experiment``, default the sweep's ``[sweep] name``, so
every sweep of one config lands in one experiment, told apart by the
``shadow.sweep_id`` tag.

When the server is down, and why:

* **before the sweep**: :func:`open_tracker` checks ``/health`` and the
  experiment before Ray starts or the store changes: a sweep asked to track
  does not run untracked (one line, exit 2, nothing stored);
* **during the sweep**: the store is written first, MLflow second. The first
  failed MLflow call stops logging for the rest of the run (no minutes of
  retries per candidate) and the sweep carries on; its summary says how many
  runs were logged and why the rest were not. ``shadow mlflow sync --sweep ID``
  (or a ``--resume``) logs the candidates MLflow lacks, found by their
  ``shadow.candidate_id`` tags, so nothing is logged twice.

Only the driver talks to MLflow (workers return their results through Ray).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from selection.channels.champion_alias import sweep_context
from selection.ranking.eligibility import row_violations
from selection.ranking.policies import RankingPolicy, get_policy, policy_from_config
from selection.records import CandidateRecord, SweepRecord
from selection.store import Store
from selection.store.rows import extra_columns
from selection.tracking.client import TrackingError, connect
from selection.tracking.runs import SweepContext, experiment_id, log_candidate, runs_of_sweep
from selection.tracking.settings import MlflowSettings, resolve
from shadow.sweep.prepare import PreparedSweep


@dataclass
class SweepTracker:
    """Logs one sweep's candidates to one MLflow experiment; counts what it logged."""

    settings: MlflowSettings
    client: Any
    experiment: str
    experiment_id: str
    policy: RankingPolicy
    context: SweepContext | None = None
    logged: int = 0
    not_logged: list[str] = field(default_factory=list)
    error: str | None = None
    #: Candidate ids MLflow holds a run of (found at start, or logged since): never logged again.
    present: set[str] = field(default_factory=set)

    def stored_config(self, record: SweepRecord) -> SweepRecord:
        """``record`` with the settings in force as its ``[mlflow]`` table (what promote reads back)."""
        return replace(record, config={**record.config, "mlflow": self.settings.to_table()})

    def start(self, store: Store, sweep_id: str, stored: list[CandidateRecord]) -> None:
        """Begin logging sweep ``sweep_id``; log ``stored`` candidates MLflow lacks (a resume)."""
        self.context = sweep_context(store, sweep_id)
        if not stored:
            return
        try:
            self.present = set(runs_of_sweep(self.client, self.settings.tracking_uri,
                                             self.experiment_id, sweep_id))
        except TrackingError as exc:
            self.error = str(exc)
            self.not_logged.extend(r.candidate_id for r in stored)
            return
        for record in stored:
            if record.candidate_id not in self.present:
                model = record.onnx_sha256
                self.log(record, {model: store.artifacts.read_verified(model)} if model else {})

    def log(self, record: CandidateRecord, artifacts: Mapping[str, bytes]) -> None:
        """Log one stored candidate as one run; after a failure, only count it as not logged.

        A candidate MLflow already holds (a resume's ensemble or warm start, found
        stored and logged by :meth:`start`) is not logged twice.
        """
        if record.candidate_id in self.present:
            return
        if self.error is not None or self.context is None:
            self.not_logged.append(record.candidate_id)
            return
        model = artifacts.get(record.onnx_sha256) if record.onnx_sha256 else None
        try:
            log_candidate(self.client, self.settings.tracking_uri, self.experiment_id, self.context,
                          record, eligible=self._eligible(record), model_bytes=model)
        except TrackingError as exc:
            self.error = str(exc)
            self.not_logged.append(record.candidate_id)
            return
        self.logged += 1
        self.present.add(record.candidate_id)

    def report(self) -> dict[str, Any]:
        """What the summary shows: where the runs went, how many, and why some did not."""
        return {
            "tracking_uri": self.settings.tracking_uri, "experiment": self.experiment,
            "experiment_id": self.experiment_id, "logged": self.logged,
            "not_logged": len(self.not_logged), "error": self.error,
        }

    def _eligible(self, record: CandidateRecord) -> dict[str, bool | None]:
        """Each device's eligibility under the sweep's ranking policy (the leaderboard's rule)."""
        found: dict[str, bool | None] = {}
        for result in record.devices:
            extra = extra_columns(result.extra)
            row = {
                "status": "ok" if record.status == "ok" and result.status == "ok" else "failed",
                "error": result.error or record.error, "accuracy": result.accuracy,
                "latency_ms": result.latency_ms, "size_bytes": result.size_bytes,
                "has_fallback": extra["has_fallback"],
                "peak_activation_bytes": extra["peak_activation_bytes"],
                "memory_budget_bytes": extra["memory_budget_bytes"],
                "device_eligible": extra["device_eligible"],
                "device_ineligible_reason": extra["ineligible_reason"],
            }
            found[result.device] = not row_violations(row, self.policy)
        return found


def open_tracker(prepared: PreparedSweep, override: str | None = None) -> SweepTracker | None:
    """The tracker of a sweep, connected and its experiment ready; None if MLflow is not configured.

    TrackingError (one line, nothing changed) if the server cannot be reached:
    called before Ray starts and before the store is written.
    """
    settings = resolve(prepared.config.mlflow, override=override)
    if settings is None:
        return None
    client = connect(settings.tracking_uri)
    name = settings.experiment_for(prepared.config.name)
    exp = experiment_id(client, settings.tracking_uri, name)
    raw = prepared.config.raw.get("ranking")
    policy = policy_from_config(raw, "[ranking]") if isinstance(raw, dict) else get_policy(None)
    return SweepTracker(settings, client, name, exp, policy)


def tracker_for_stored(store: Store, sweep_id: str, override: str | None = None) -> SweepTracker:
    """A tracker of a stored sweep, from the ``[mlflow]`` table it was run with (``shadow mlflow sync``).

    ConfigError if no tracking URI applies (none stored, no ``override``, no
    ``$MLFLOW_TRACKING_URI``); TrackingError if the server cannot be reached.
    """
    from selection.errors import ConfigError

    sweep = store.get_sweep(sweep_id)
    table = sweep.config.get("mlflow")
    settings = resolve(table if isinstance(table, dict) else None, override=override)
    if settings is None:
        raise ConfigError(f"sweep {sweep_id!r} was not tracked in MLflow and no tracking URI is given; "
                          "pass --mlflow URI or set $MLFLOW_TRACKING_URI")
    client = connect(settings.tracking_uri)
    name = settings.experiment_for(sweep.name)
    exp = experiment_id(client, settings.tracking_uri, name)
    raw = sweep.config.get("ranking")
    policy = policy_from_config(raw, "[ranking]") if isinstance(raw, dict) else get_policy(None)
    return SweepTracker(settings, client, name, exp, policy)
