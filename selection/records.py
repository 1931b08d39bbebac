"""Immutable records exchanged between producers (``shadow``) and the store.

These are plain frozen dataclasses holding JSON-able values only, so a
producer other than ``shadow`` can build them, and the store can persist them
on any SQL backend. The store never mutates a record it was handed and returns
fresh records from queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

CandidateStatus = Literal["ok", "failed"]
SweepStatus = Literal["running", "finished", "failed", "interrupted"]
PromotionAction = Literal["promote", "rollback"]
#: What an event records (the closed set the store accepts; ``shadow events --kind`` offers these).
EventKind = Literal[
    "trigger",         # a watch trigger fired (its evidence: the rule, the numbers it compared)
    "sweep_started",   # the controller started a shadow sweep on a data version
    "sweep_resumed",   # a restarted controller took up the sweep a killed one left running
    "sweep_finished",  # that sweep ended (finished, failed or interrupted)
    "gate",            # the gate's decision on a challenger (GateDecision.to_json() as evidence)
    "promotion",       # a channel changed (history_id names the promotions row)
    "proposal",        # mode = "propose": a pending decision awaiting approve/reject
    "approval",        # a proposal approved (who and why)
    "rejection",       # a proposal rejected (who and why)
    "controller",      # the controller started, stopped, or skipped a pass (and why)
    "error",           # a step failed; the controller carried on or stopped (the error as evidence)
    "rollout",         # a staged rollout started, widened, completed or rolled back (selection.fleet)
]

#: The device every candidate is evaluated on: this host's CPU through ONNX
#: Runtime, fp32. Emulated edge devices add their own rows.
HOST_DEVICE = "host-cpu"
#: The channel an edge app reads by default.
DEFAULT_CHANNEL = "production"


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (what every record stores)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class HoldoutRecord:
    """The rows every candidate of a sweep is scored on (the most recent ones).

    ``start``/``stop`` index the dataset's time-ordered rows, ``stop`` exclusive.
    """

    start: int
    stop: int
    rows_sha256: str
    #: Artifact (.npz, ``features`` and ``labels``) holding the holdout rows, so a
    #: champion from another sweep can be re-scored on exactly these rows.
    data_sha256: str | None = None

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SweepRecord:
    """One sweep: a dataset, a holdout and the config that planned it."""

    sweep_id: str
    name: str
    dataset: str
    dataset_fingerprint: str
    holdout: HoldoutRecord
    config: dict[str, Any]
    n_planned: int
    created_at: datetime = field(default_factory=utc_now)
    status: SweepStatus = "running"
    finished_at: datetime | None = None
    #: The devices every candidate runs on, in the sweep's order; the first is
    #: where the leaderboard lists a candidate that failed before any device ran
    #: (none given: the host device).
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class SliceRecord:
    """Lineage of one training slice: how it was cut and which rows it holds."""

    sweep_id: str
    slice_id: str
    strategy: str
    params: dict[str, Any]
    n_rows: int
    rows_sha256: str


@dataclass(frozen=True)
class DeviceResult:
    """How one candidate did on one device (one leaderboard row).

    ``latency_ms`` is the figure ranking uses for that device: measured on the
    host for ``host-cpu``, estimated by a cost model for emulated devices.
    Host-measured latencies always sit in their own ``host_*`` fields.
    ``artifact_sha256`` names the model bytes this device runs (the artifact a
    promotion to this device copies into the channel).
    """

    device: str
    status: CandidateStatus
    error: str | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    host_latency_p50_ms: float | None = None
    host_latency_p99_ms: float | None = None
    size_bytes: int | None = None
    artifact_sha256: str | None = None
    emulator: str | None = None
    #: Artifact (.npy, int64) with the predicted class of every holdout row, in
    #: holdout order: what paired tests between two candidates compare.
    predictions_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateRecord:
    """One trained shadow model and its results on every device it was run on."""

    candidate_id: str
    sweep_id: str
    slice_id: str
    family: str
    params: dict[str, Any]
    seed: int
    status: CandidateStatus
    error: str | None = None
    train_seconds: float | None = None
    onnx_sha256: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    devices: tuple[DeviceResult, ...] = ()
    created_at: datetime = field(default_factory=utc_now)
    #: The candidate this model refits, or None for a candidate trained in a sweep.
    #: A refit retrains a gated candidate's recipe on its slice *plus the sweep's
    #: holdout*, so its holdout scores are in-sample: it is never ranked, and it is
    #: promoted only on its parent's gate decision. Stored as ``candidates.refit_of``.
    refit_of: str | None = None

    def device(self, name: str) -> DeviceResult | None:
        """The result on device ``name``, or None if it was not run there."""
        return next((d for d in self.devices if d.device == name), None)

    @property
    def refit(self) -> dict[str, Any] | None:
        """How this refit was made (``lineage["refit"]``: rows, holdout, checks), None if not a refit.

        Whether a model is a refit is :attr:`refit_of`; the lineage holds the
        details, and at least ``{"of": refit_of}`` when a producer recorded none.
        """
        if self.refit_of is None:
            return None
        value = self.lineage.get("refit") if isinstance(self.lineage, dict) else None
        return value if isinstance(value, dict) else {"of": self.refit_of}


@dataclass(frozen=True)
class PromotionRecord:
    """One append-only history row: a channel changed from one model to another."""

    history_id: int
    channel: str
    action: PromotionAction
    candidate_id: str
    device: str
    sha256: str
    previous_candidate_id: str | None
    previous_sha256: str | None
    at: datetime
    who: str
    reason: str | None
    reverts_id: int | None = None
    decision: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One append-only event-log row: something the controller did or decided, and why.

    Triggers, sweeps, gate decisions, proposals and their approval or
    rejection, promotions: each is stored with its ``reason`` (one line for a
    person) and its ``evidence`` (JSON-able values a script can check: the
    numbers a trigger compared, the gate's decision). ``event_id`` is assigned
    by the store (:meth:`Store.append_event` returns the stored copy); build
    the record with ``event_id=None``. The other ids say what the event is
    about, each None where it names nothing: the dataset version (its
    fingerprint), the sweep, the candidate, the promotion history row.
    Keyword-only: six of the fields are optional ids.
    """

    event_id: int | None = None
    channel: str
    kind: EventKind
    at: datetime = field(default_factory=utc_now)
    data_version: str | None = None
    sweep_id: str | None = None
    candidate_id: str | None = None
    history_id: int | None = None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
