"""The ensemble candidate: a sweep's top candidates combined into one model, measured like any other.

After a sweep's candidates finished, :func:`build_ensemble` takes its best ``top_k`` by the
sweep's own ranking policy on its first device (one per slice first: members trained on
different rows disagree where averaging helps; then the next best of any slice), weights
them, combines their ONNX graphs into one (:func:`shadow.models.ensemble.combine`) and runs
that graph through every device of the sweep exactly as a trained candidate is run
(:func:`shadow.sweep.task.evaluate_on_devices`: quantized and compiled on an edge device,
with its real size and estimated latency). It is stored as a candidate of the sweep (family
``ensemble``, slice ``ensemble-top<k>``), so the leaderboard ranks it, the ranking policy
weighs its accuracy against its cost, and the gate and ``promote`` treat it like any other.

Weights. ``"uniform"``: equal. ``"holdout"``: each member's SAMME weight from its holdout
error ``e`` on the first device, ``log((1 - e) / e) + log(K - 1)`` for ``K`` classes (zero
for a member no better than chance, floored just above zero): the multi-class form of the
boosting weight Learn++.NSE also uses for its per-batch members. The members were chosen
and weighted on the holdout the ensemble is then scored on, so its holdout score is as
optimistic as any candidate's chosen on that holdout is.

The ensemble's id is deterministic (sweep, members, weights): building it twice returns the
stored one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from selection.artifacts.content import sha256_bytes
from selection.errors import NotFoundError
from selection.leaderboard.frame import leaderboard
from selection.records import CandidateRecord
from selection.store import Store
from shadow.models.ensemble import EnsembleError, combine, normalize_weights
from shadow.sweep.config import BASELINE_FAMILIES
from shadow.sweep.prepare import PreparedSweep, sweep_data
from shadow.sweep.task import CandidateOutcome, SweepData, describe_error, evaluate_on_devices

#: The family name an ensemble candidate is stored under.
ENSEMBLE_FAMILY = "ensemble"
#: Weighting schemes ``[ensemble] weights`` accepts.
WEIGHTINGS = ("holdout", "uniform")
#: Smallest holdout weight: a member no better than chance still counts a little.
MIN_WEIGHT = 1e-3


def ensemble_slice_id(top_k: int) -> str:
    """The slice id an ensemble of ``top_k`` is stored under (its rows are its members')."""
    return f"ensemble-top{top_k}"


def ensemble_id(sweep_id: str, members: list[str], weights: list[float]) -> str:
    """Deterministic id of the ensemble of ``members`` with ``weights`` in ``sweep_id``."""
    key = json.dumps(["ensemble", sweep_id, members, [round(w, 12) for w in weights]],
                     separators=(",", ":"))
    return "c-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def choose_members(store: Store, sweep_id: str, top_k: int, device: str) -> list[CandidateRecord]:
    """The sweep's best ``top_k`` eligible candidates on ``device``, one per slice first, by rank.

    EnsembleError when fewer than two are eligible (nothing to combine).
    """
    frame = leaderboard(store, sweep=sweep_id, device=device)
    frame = frame[frame["rank"].notna() & (frame["family"] != ENSEMBLE_FAMILY)]
    ranked = [str(c) for c in frame.sort_values("rank")["candidate_id"]]
    records = {cid: store.get_candidate(cid) for cid in ranked}
    # Neither refits (in-sample scores) nor warm starts (their rows are no slice the config
    # cuts, and they are built after the ensemble: shadow.sweep.warm_start), nor baselines (a
    # class prior adds nothing to a vote but a pull toward the commonest class).
    ranked = [cid for cid in ranked if not records[cid].refit_of
              and "warm_start" not in (records[cid].lineage or {})
              and records[cid].family not in BASELINE_FAMILIES]
    chosen: list[str] = []
    seen: set[str] = set()
    for cid in ranked:  # distinct slices first
        if len(chosen) < top_k and records[cid].slice_id not in seen:
            chosen.append(cid)
            seen.add(records[cid].slice_id)
    for cid in ranked:  # then the next best, whatever their slice
        if len(chosen) < top_k and cid not in chosen:
            chosen.append(cid)
    if len(chosen) < 2:
        raise EnsembleError(
            f"sweep {sweep_id!r} has {len(chosen)} eligible candidate(s) on device {device!r}; "
            "an ensemble needs at least 2: check the sweep's errors with `shadow leaderboard`"
        )
    return [records[c] for c in sorted(chosen, key=ranked.index)]


def member_weights(members: list[CandidateRecord], device: str, how: str, n_classes: int) -> list[float]:
    """The members' weights (summing to 1): uniform, or by holdout error on ``device`` (SAMME)."""
    if how not in WEIGHTINGS:
        raise EnsembleError(f"ensemble weights {how!r} are not known; use one of {', '.join(WEIGHTINGS)}")
    if how == "uniform":
        return normalize_weights([1.0] * len(members), len(members))
    raw = []
    for member in members:
        result = member.device(device)
        accuracy = result.accuracy if result is not None else None
        if accuracy is None:
            raise EnsembleError(f"member {member.candidate_id} has no holdout accuracy on "
                                f"{device!r}; use weights = \"uniform\"")
        error = min(max(1.0 - accuracy, 1e-6), 1.0 - 1e-6)
        raw.append(max(math.log((1.0 - error) / error) + math.log(max(n_classes - 1, 1)), MIN_WEIGHT))
    return normalize_weights(raw, len(members))


def member_rows(prepared: PreparedSweep, members: list[CandidateRecord]) -> np.ndarray:
    """Every row some member trained on (its slice): what the ensemble is calibrated on."""
    slices = {s.slice_id: s.rows for s in prepared.slices}
    missing = [m.slice_id for m in members if m.slice_id not in slices]
    if missing:
        raise EnsembleError(f"member slice(s) {missing} are not cut by the sweep's config today; "
                            "the ensemble needs the sweep's own data")
    return np.unique(np.concatenate([slices[m.slice_id] for m in members])).astype(np.int64)


def ensemble_outcome(
    store: Store, record: CandidateRecord, members: list[CandidateRecord], weights: list[float],
    data: SweepData, rows: np.ndarray,
) -> CandidateOutcome:
    """Combine ``members``' stored graphs, run the result on ``data``'s devices; ``record`` filled in."""
    started = time.perf_counter()
    models = []
    for member in members:
        if not member.onnx_sha256:
            raise EnsembleError(f"member {member.candidate_id} has no stored model")
        models.append(store.artifacts.read_verified(member.onnx_sha256))
    onnx_bytes = combine(models, weights)
    results, artifacts = evaluate_on_devices(onnx_bytes, data, rows, record.seed)
    lineage = {**data.lineage, **record.lineage, "slice_rows": int(len(rows)),
               "compute_seconds": time.perf_counter() - started}
    return CandidateOutcome(replace(record, status="ok", onnx_sha256=sha256_bytes(onnx_bytes),
                                    devices=results, lineage=lineage), artifacts)


def ensemble_record(sweep_id: str, candidate_id: str, slice_id: str, members: list[CandidateRecord],
                    weights: list[float], how: str, seed: int, device: str) -> CandidateRecord:
    """The ensemble's record before it runs: members and weights in params, their lineage."""
    params: dict[str, Any] = {"members": [m.candidate_id for m in members], "weights": weights,
                              "weighting": how, "top_k": len(members)}
    lineage: dict[str, Any] = {"ensemble": {
        "members": params["members"], "slices": [m.slice_id for m in members],
        "families": [m.family for m in members], "weights": weights, "weighting": how,
        "ranked_on": device,
        "member_accuracy": [getattr(m.device(device), "accuracy", None) for m in members],
    }}
    return CandidateRecord(
        candidate_id=candidate_id, sweep_id=sweep_id, slice_id=slice_id, family=ENSEMBLE_FAMILY,
        params=params, seed=seed, status="ok", lineage=lineage,
        train_seconds=float(sum(m.train_seconds or 0.0 for m in members)),
    )


def build_ensemble(
    store: Store, sweep_id: str, *, top_k: int = 3, weights: str = "holdout",
    prepared: PreparedSweep | None = None, config_path: Path | None = None,
) -> CandidateRecord:
    """Combine the sweep's ``top_k`` best candidates into one, run it on the sweep's devices, store it.

    ``prepared`` is the sweep as planned in this process (the runner passes its own);
    without it the sweep is prepared again from its stored config, on the data version
    it trained on. Returns the stored record (the one already stored if built before).
    Raises EnsembleError (fewer than 2 eligible candidates, members that do not combine)
    or RefitError/NotFoundError when the sweep's data cannot be loaded again.
    """
    sweep = store.get_sweep(sweep_id)
    device = sweep.devices[0] if sweep.devices else "host-cpu"
    members = choose_members(store, sweep_id, top_k, device)
    if prepared is None:
        from shadow.sweep.restore import prepare_stored_sweep

        prepared = prepare_stored_sweep(store, members[0], config_path)
    data = sweep_data(prepared)
    normalized = member_weights(members, device, weights, data.n_classes)
    candidate_id = ensemble_id(sweep_id, [m.candidate_id for m in members], normalized)
    try:
        return store.get_candidate(candidate_id)
    except NotFoundError:
        pass
    record = ensemble_record(sweep_id, candidate_id, ensemble_slice_id(top_k), members, normalized,
                             weights, prepared.config.seed, device)
    outcome = ensemble_outcome(store, record, members, normalized, data, member_rows(prepared, members))
    store.add_candidate(outcome.record, outcome.artifacts)
    return outcome.record


def failed_ensemble(sweep_id: str, top_k: int, weights: str, seed: int, exc: BaseException) -> CandidateRecord:
    """The failed row an ensemble that could not be built leaves in its sweep."""
    key = json.dumps(["ensemble-failed", sweep_id, top_k, weights], separators=(",", ":"))
    return CandidateRecord(
        candidate_id="c-" + hashlib.sha256(key.encode()).hexdigest()[:12], sweep_id=sweep_id,
        slice_id=ensemble_slice_id(top_k), family=ENSEMBLE_FAMILY,
        params={"top_k": top_k, "weighting": weights}, seed=seed, status="failed",
        error=describe_error(exc).splitlines()[0],
    )


__all__ = ["ENSEMBLE_FAMILY", "WEIGHTINGS", "build_ensemble", "choose_members", "ensemble_id",
           "ensemble_outcome", "ensemble_record", "ensemble_slice_id", "failed_ensemble",
           "member_rows", "member_weights"]
