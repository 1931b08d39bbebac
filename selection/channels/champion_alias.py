"""The MLflow registry follows a channel: its ``champion`` alias names the channel's model.

Where it plugs in: :func:`selection.channels.promotion.promote` and
:func:`~selection.channels.promotion.rollback`, the one core every path goes
through (``shadow promote``/``rollback``, the gate's ``promote_through_gate``,
the loop controller, ``shadow approve``, the backtest). Nothing else in the
project moves the alias.

The choice, when the registry cannot be reached: **the promotion fails before
anything changes.** :func:`prepare` runs before the channel's lock and
transaction: it connects (a ``/health`` check with a short timeout), finds the
candidate's run (or logs one), logs the shipped model if MLflow lacks it and
registers its version. Any failure there is a :class:`RegistrySyncError` and
the channel, its history and its files are untouched. After the commit and the
file swap, :meth:`AliasMove.apply` points the alias at that version. If the
server dies in that instant, the promotion stands (the store's history is the
source of truth) and an ``error`` event records the alias left behind; the
next promote or rollback of the channel, or :func:`sync_champion` (``shadow
mlflow sync``), puts it right, since moving the alias is idempotent.

Which registry: the ``[mlflow]`` table stored with the incoming candidate's
sweep, else the outgoing one's, else ``$MLFLOW_TRACKING_URI``; none of them:
no registry, nothing to do. The registered model is ``[mlflow]
registered_model``, default ``<dataset>-<channel>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selection.artifacts.content import ArtifactStore
from selection.errors import ConfigError, PromotionError
from selection.records import CandidateRecord, EventRecord, PromotionRecord
from selection.store import Store
from selection.tracking.client import TrackingError, connect
from selection.tracking.registry import ensure_version, set_champion
from selection.tracking.runs import MODEL_TAG, SweepContext, experiment_id, find_run, log_candidate, log_model
from selection.tracking.settings import CHAMPION_ALIAS, MlflowSettings, resolve, settings_from_config


class RegistrySyncError(PromotionError, ConnectionError):
    """The MLflow registry a channel follows cannot be reached or refused; nothing changed."""


@dataclass(frozen=True)
class AliasMove:
    """A registered version, ready before the channel changes; the alias moves after."""

    client: Any
    uri: str
    model_name: str
    version: str
    channel: str

    def apply(self, store: Store, record: PromotionRecord) -> str | None:
        """Point the alias at the version; on failure, record an ``error`` event and return why."""
        try:
            set_champion(self.client, self.uri, self.model_name, self.version,
                         channel=self.channel, history_id=record.history_id)
        except TrackingError as exc:
            reason = (f"channel {self.channel!r} changed (history row {record.history_id}) but "
                      f"the MLflow alias {CHAMPION_ALIAS!r} of {self.model_name!r} was not moved: "
                      f"{exc}; run `shadow mlflow sync --channel {self.channel}` once the server is up")
            store.append_event(EventRecord(
                channel=self.channel, kind="error", candidate_id=record.candidate_id,
                history_id=record.history_id, reason=reason,
                evidence={"mlflow": {"tracking_uri": self.uri, "registered_model": self.model_name,
                                     "version": self.version, "alias": CHAMPION_ALIAS,
                                     "pending": True}},
            ))
            return reason
        return None


def prepare(
    store: Store, channel: str, candidate: CandidateRecord, device: str, sha: str, *,
    outgoing: str | None,
) -> AliasMove | None:
    """Register ``candidate``'s shipped model (``sha``) before ``channel`` moves to it.

    None when no registry is configured for it. RegistrySyncError (nothing
    changed) when the registry is configured but cannot be reached or refuses.
    """
    settings = _settings(store, candidate, outgoing)
    if settings is None:
        return None
    uri = settings.tracking_uri
    sweep = store.get_sweep(candidate.sweep_id)
    try:
        name = settings.model_name_for(sweep.dataset, channel)
        client = connect(uri)
        experiment = experiment_id(client, uri, settings.experiment_for(sweep.name))
        run = find_run(client, uri, experiment, candidate.candidate_id)
        model_uri = run.data.tags.get(MODEL_TAG + sha) if run is not None else None
        run_id = str(run.info.run_id) if run is not None else None
        if model_uri is None:
            # A refit, an ensemble, a candidate of an untracked sweep, or a device's own model:
            # MLflow lacks it, so log it now (the run first, if MLflow has none).
            if run_id is None:
                run_id = log_candidate(client, uri, experiment, sweep_context(store, sweep.sweep_id),
                                       candidate, eligible={}, model_bytes=None)
            shipped = _model_bytes(store.artifacts, sha)
            model_uri = log_model(client, uri, run_id, candidate, sha, shipped,
                                  name="model" if sha == candidate.onnx_sha256 else f"model-{device}")
        version = ensure_version(client, uri, name, model_uri=model_uri, run_id=run_id,
                                 candidate_id=candidate.candidate_id, sha=sha, device=device)
    except (TrackingError, ConfigError) as exc:
        raise RegistrySyncError(
            f"channel {channel!r} follows the MLflow registry at {uri}, which must register "
            f"candidate {candidate.candidate_id!r} first: {exc}; nothing changed"
        ) from None
    return AliasMove(client, uri, name, version, channel)


def sync_champion(store: Store, channel: str, record: PromotionRecord) -> AliasMove | None:
    """Make the alias follow ``record`` (the channel's current row); None if no registry applies.

    RegistrySyncError if the registry cannot be reached (the store is never
    changed here; a failed alias move is raised, not recorded, since the
    caller asked for exactly this).
    """
    candidate = store.get_candidate(record.candidate_id)
    move = prepare(store, channel, candidate, record.device, record.sha256,
                   outgoing=record.previous_candidate_id)
    if move is not None:
        try:
            set_champion(move.client, move.uri, move.model_name, move.version,
                         channel=channel, history_id=record.history_id)
        except TrackingError as exc:
            raise RegistrySyncError(f"{exc}; the channel itself is unchanged") from None
    return move


def sweep_context(store: Store, sweep_id: str) -> SweepContext:
    """The tags every MLflow run of sweep ``sweep_id`` carries, read from the store."""
    sweep = store.get_sweep(sweep_id)
    strategies = {s.slice_id: s.strategy for s in store.get_slices(sweep_id)}
    return SweepContext(sweep.sweep_id, sweep.name, sweep.dataset, sweep.dataset_fingerprint, strategies)


def _settings(store: Store, candidate: CandidateRecord, outgoing: str | None) -> MlflowSettings | None:
    """The registry a change to ``candidate`` follows (see the module docstring for the order)."""
    tables = [_stored_table(store, candidate.sweep_id)]
    if outgoing is not None:
        tables.append(_stored_table(store, store.get_candidate(outgoing).sweep_id))
    explicit = next((t for t in tables if t and t.get("tracking_uri")), None)
    table = explicit or next((t for t in tables if t), None)
    try:
        return resolve(settings_from_config(table, "[mlflow]") if table else None)
    except ConfigError as exc:
        raise RegistrySyncError(f"the stored [mlflow] settings cannot be used: {exc}") from None


def _stored_table(store: Store, sweep_id: str) -> dict[str, Any] | None:
    table = store.get_sweep(sweep_id).config.get("mlflow")
    return table if isinstance(table, dict) else None


def _model_bytes(artifacts: ArtifactStore, sha: str) -> bytes:
    return artifacts.read_verified(sha)
