"""The MLflow registry follows a channel: its ``champion`` alias names the channel's model.

Where it plugs in: :func:`selection.channels.promotion.promote` and
:func:`~selection.channels.promotion.rollback`, the one core every path goes
through (``shadow promote``/``rollback``, the gate's ``promote_through_gate``,
the loop controller, ``shadow approve``, the fleet's automatic rollback, the
backtest). Nothing else in the project moves the alias.

The choice when the registry cannot be reached differs, on purpose, between
the two:

* **promote fails before anything changes.** :func:`prepare` runs before the
  channel's lock and transaction: it connects (a ``/health`` check with a
  short timeout), finds the candidate's run (or logs one), logs the shipped
  model if MLflow lacks it and registers its version. Any failure there is a
  :class:`RegistrySyncError` and the channel, its history and its files are
  untouched. A promotion is a choice a person or the loop can make again in a
  minute; a registry that silently lags the channel's new model is worse.
* **rollback never waits on the registry.** A rollback is the way out of a
  bad model (the fleet's canary rolls back by itself): bookkeeping must not
  keep a bad model serving. It rolls back first; then :func:`follow` readies
  and moves the alias, and any failure becomes the pending-alias ``error``
  event below.

After the change (and after the channel's lock is released, so a slow server
never holds the lock and makes other changes fail "busy"),
:meth:`AliasMove.apply` points the alias at the version. If the server is
down by then, the change stands (the store's history is the source of
truth) and an ``error`` event records the alias left behind; the next
promote or rollback of the channel, or :func:`sync_champion` (``shadow mlflow
sync --channel``), puts it right, since moving the alias is idempotent. Since
the move runs outside the lock, two changes in quick succession could move it
out of order: after moving it, :meth:`AliasMove.apply` re-reads the channel
and follows a newer row if one landed meanwhile. When the registered model's
name changes between two rows (another dataset, another ``registered_model``)
the outgoing model's ``champion`` alias is removed, so it names no model the
channel no longer serves.

Which registry: the ``[mlflow]`` table stored with the incoming candidate's
sweep (``enabled = false`` there: none), else the outgoing one's, else
``$MLFLOW_TRACKING_URI``; none of them: no registry, nothing to do. The
registered model is ``[mlflow] registered_model``, default
``<dataset>-<channel>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selection.artifacts.content import ArtifactStore
from selection.errors import ConfigError, PromotionError
from selection.records import CandidateRecord, EventRecord, PromotionRecord
from selection.store import Store
from selection.store import channel_rows as queries
from selection.tracking.client import TrackingError, connect
from selection.tracking.registry import drop_champion, ensure_version, set_champion
from selection.tracking.runs import MODEL_TAG, SweepContext, experiment_id, find_run, log_candidate, log_model
from selection.tracking.settings import CHAMPION_ALIAS, MlflowSettings, resolve, settings_from_config

#: How many newer channel rows one alias move follows (changes landing while it moves the alias).
_FOLLOW_DEPTH = 2


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
    #: The registered model the outgoing row's alias is on, when it is another one ("" if none).
    previous_model: str = ""

    def move(self, history_id: int) -> None:
        """Point the alias at the version (TrackingError if the server fails)."""
        set_champion(self.client, self.uri, self.model_name, self.version,
                     channel=self.channel, history_id=history_id)
        if self.previous_model and self.previous_model != self.model_name:
            drop_champion(self.client, self.uri, self.previous_model)

    def apply(self, store: Store, record: PromotionRecord, *, _depth: int = 0) -> str | None:
        """Point the alias at the version; on failure, record an ``error`` event and return why.

        Runs after the channel's lock is released; if a newer change landed
        meanwhile, the alias then follows that one (see the module docstring).
        """
        try:
            self.move(record.history_id)
        except TrackingError as exc:
            return _pending(store, record, str(exc), uri=self.uri, model_name=self.model_name,
                            version=self.version)
        newer = _current_row(store, self.channel)
        if newer is not None and newer.history_id != record.history_id and _depth < _FOLLOW_DEPTH:
            return follow(store, newer, _depth=_depth + 1)
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
    try:
        return _ready(store, settings, channel, candidate, device, sha, outgoing)
    except (TrackingError, ConfigError) as exc:
        raise RegistrySyncError(
            f"channel {channel!r} follows the MLflow registry at {settings.tracking_uri}, which must "
            f"register candidate {candidate.candidate_id!r} first: {exc}; nothing changed"
        ) from None


def preflight(store: Store, channel: str, candidate: CandidateRecord, *, outgoing: str | None) -> None:
    """RegistrySyncError unless the registry a promotion of ``candidate`` follows answers ``/health``.

    For work done before :func:`prepare` that a refused promotion would waste
    (``promote --refit`` trains first); nothing is registered here.
    """
    settings = _settings(store, candidate, outgoing)
    if settings is None:
        return
    try:
        connect(settings.tracking_uri)
    except (TrackingError, ConfigError) as exc:
        raise RegistrySyncError(
            f"channel {channel!r} follows the MLflow registry at {settings.tracking_uri}: {exc}; "
            "nothing was trained or changed") from None


def follow(store: Store, record: PromotionRecord, *, _depth: int = 0) -> str | None:
    """Ready and move the alias for ``record``, a change already made; never raises for MLflow.

    What a rollback calls once it is done: any failure (server down, the
    stored settings unusable) is the pending-alias ``error`` event, returned as
    its reason. None when the alias moved or no registry applies.
    """
    channel = record.channel
    try:
        candidate = store.get_candidate(record.candidate_id)
        settings = _settings(store, candidate, record.previous_candidate_id)
    except RegistrySyncError as exc:
        return _pending(store, record, str(exc), uri=None)
    if settings is None:
        return None
    try:
        move = _ready(store, settings, channel, candidate, record.device, record.sha256,
                      record.previous_candidate_id)
    except (TrackingError, ConfigError) as exc:
        return _pending(store, record, str(exc), uri=settings.tracking_uri)
    return move.apply(store, record, _depth=_depth)


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
            move.move(record.history_id)
        except TrackingError as exc:
            raise RegistrySyncError(f"{exc}; the channel itself is unchanged") from None
    return move


def sweep_context(store: Store, sweep_id: str) -> SweepContext:
    """The tags every MLflow run of sweep ``sweep_id`` carries, read from the store."""
    sweep = store.get_sweep(sweep_id)
    strategies = {s.slice_id: s.strategy for s in store.get_slices(sweep_id)}
    return SweepContext(sweep.sweep_id, sweep.name, sweep.dataset, sweep.dataset_fingerprint, strategies)


def _ready(
    store: Store, settings: MlflowSettings, channel: str, candidate: CandidateRecord, device: str,
    sha: str, outgoing: str | None,
) -> AliasMove:
    """Connect, log what MLflow lacks and register the version (TrackingError/ConfigError)."""
    uri = settings.tracking_uri
    sweep = store.get_sweep(candidate.sweep_id)
    name = settings.model_name_for(sweep.dataset, channel)
    previous = _outgoing_model(store, settings, channel, outgoing)
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
    return AliasMove(client, uri, name, version, channel, previous)


def _outgoing_model(store: Store, settings: MlflowSettings, channel: str, outgoing: str | None) -> str:
    """The registered model the outgoing candidate's alias is on, if on this same server ("" if not)."""
    if outgoing is None:
        return ""
    sweep = store.get_sweep(store.get_candidate(outgoing).sweep_id)
    table = _stored_table(sweep.sweep_id, store) or {}
    if table.get("tracking_uri") and table["tracking_uri"] != settings.tracking_uri:
        return ""  # another server: not ours to touch
    registered = table.get("registered_model") or ""
    try:
        return MlflowSettings(settings.tracking_uri, registered_model=str(registered)).model_name_for(
            sweep.dataset, channel)
    except ConfigError:
        return ""


def _pending(
    store: Store, record: PromotionRecord, why: str, *, uri: str | None,
    model_name: str | None = None, version: str | None = None,
) -> str:
    """Record the ``error`` event of an alias left behind by ``record``'s change; returns its reason."""
    channel = record.channel
    of = f" of {model_name!r}" if model_name else ""
    reason = (f"channel {channel!r} changed (history row {record.history_id}) but the MLflow alias "
              f"{CHAMPION_ALIAS!r}{of} was not moved: {why}; run `shadow mlflow sync --channel "
              f"{channel}` once the server is up")
    store.append_event(EventRecord(
        channel=channel, kind="error", candidate_id=record.candidate_id,
        history_id=record.history_id, reason=reason,
        evidence={"mlflow": {"tracking_uri": uri, "registered_model": model_name,
                             "version": version, "alias": CHAMPION_ALIAS, "pending": True}},
    ))
    return reason


def _current_row(store: Store, channel: str) -> PromotionRecord | None:
    with store.snapshot() as conn:
        now = queries.channel_row(conn, channel)
        return None if now is None else queries.get_promotion(conn, int(now["history_id"]))


def _settings(store: Store, candidate: CandidateRecord, outgoing: str | None) -> MlflowSettings | None:
    """The registry a change to ``candidate`` follows (see the module docstring for the order)."""
    own = _stored_table(candidate.sweep_id, store)
    if own is not None and own.get("enabled") is False:
        return None  # the candidate's sweep turned tracking off (the backtest's): so do its changes
    tables = [own]
    if outgoing is not None:
        tables.append(_stored_table(store.get_candidate(outgoing).sweep_id, store))
    explicit = next((t for t in tables if t and t.get("tracking_uri")), None)
    table = explicit or next((t for t in tables if t), None)
    try:
        return resolve(settings_from_config(table, "[mlflow]") if table else None)
    except ConfigError as exc:
        raise RegistrySyncError(f"the stored [mlflow] settings cannot be used: {exc}") from None


def _stored_table(sweep_id: str, store: Store) -> dict[str, Any] | None:
    table = store.get_sweep(sweep_id).config.get("mlflow")
    return table if isinstance(table, dict) else None


def _model_bytes(artifacts: ArtifactStore, sha: str) -> bytes:
    return artifacts.read_verified(sha)
