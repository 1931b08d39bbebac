"""Refit: retrain a chosen candidate's recipe on its slice plus the holdout, before shipping.

A sweep never trains on its holdout (the most recent rows): that is what makes
every candidate's score there honest and the champion/challenger test paired.
Once the gate has chosen a candidate, though, withholding those rows from the
model that ships throws away the newest data, which under drift is the most
valuable. A *refit* trains the same family, hyper-parameters and seed on the
candidate's slice plus the holdout rows of the slice's population (all of them,
or for a ``segment`` slice the holdout rows of that segment), on all of those
rows (no validation split), then exports, verifies and runs it on the same
devices, exactly like the candidate itself (:func:`shadow.sweep.task.run_candidate`).

Its holdout scores are in-sample, so a refit is never ranked (it is stored with
``refit_of`` naming its parent, which every leaderboard query leaves out) and is
promoted only on its parent's gate decision (``selection.gate.decision.promote_through_gate(...,
refit=...)``). Before it may ship it must pass two checks, or RefitError says why
and nothing is promoted:

* it ran ok on every device its parent ran ok on, and fits each as well as its
  parent (no new CPU fallback, device ineligibility or memory-budget overrun:
  the leaderboard's device rules, ``selection.ranking.eligibility.DEVICE_RULES``);
* on the holdout rows it was trained on it scores no more than ``max_drop``
  below its parent's out-of-sample accuracy (a refit that cannot even fit the
  rows it saw has gone wrong: a diverged run, a bad seed). By default the
  allowed drop is scaled to the holdout: 2.5 standard errors of the parent's
  accuracy on that many rows, and at least 0.05 (:func:`allowed_drop`). A fixed
  0.05 was over twice the standard error on 365 rows (a drift replay with 0.02
  refused a sound refit that merely landed 0.025 lower by chance), but under one
  on a 63-row holdout, where the parent's accuracy is also the best of several
  candidates on those very rows and so lucky by itself; and a refit that stops
  training early on a noisy stream (``early_stopping``) rightly does not
  memorize the rows it saw.

The refit's id is deterministic (parent and rows), so asking twice returns the
stored one.

An ensemble (:mod:`shadow.sweep.ensemble`) has no recipe of its own: its refit refits each
member (reusing a member's stored refit), combines the refits with the ensemble's weights
and passes the same checks against the ensemble. ``plan_refit`` on an ensemble only finds
that stored refit (there is no single training task to hand out); ``refit_candidate`` makes
it. Training runs in this process: it is one model, and the driver (the CLI's ``shadow promote
--refit``) holds no Ray workers.

A warm start (:mod:`shadow.sweep.warm_start`) is refit as it was made: the model it continued,
trained further with its params on its rows (the newest before the holdout) plus the holdout.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from selection.errors import NotFoundError, StoreError
from selection.gate.checks import board_row
from selection.ranking.eligibility import DEVICE_RULES, row_violations
from selection.ranking.policies import RankingPolicy
from selection.records import CandidateRecord, DeviceResult
from selection.store import Store
from shadow.data.slicing.base import rows_sha256
from shadow.errors import RefitError
from shadow.models.ensemble import EnsembleError
from shadow.sweep.ensemble import ENSEMBLE_FAMILY, ensemble_outcome, member_rows
from shadow.sweep.plan import CandidateSpec
from shadow.sweep.prepare import PreparedSweep, sweep_data
from shadow.sweep.restore import prepare_stored_sweep
from shadow.sweep.task import CandidateOutcome, SweepData, run_candidate
from shadow.sweep.warm_start import LINEAGE_KEY as WARM_LINEAGE
from shadow.sweep.warm_start import continued_from, warm_rows

#: The least a refit may score below its parent on rows it trained on, whatever the holdout's size.
MIN_DROP = 0.05
#: Standard errors of the parent's holdout accuracy a refit may score below it (see the docstring).
DROP_STANDARD_ERRORS = 2.5


def allowed_drop(parent_accuracy: float, holdout_rows: int) -> float:
    """How far below its parent's accuracy a sound refit may score in-sample on ``holdout_rows``."""
    if holdout_rows <= 0:
        return MIN_DROP
    p = min(max(parent_accuracy, 0.0), 1.0)
    return max(MIN_DROP, DROP_STANDARD_ERRORS * math.sqrt(p * (1 - p) / holdout_rows))


#: Suffix of a refit's slice id (its rows are the parent slice's plus holdout rows).
SLICE_SUFFIX = "+holdout"


def refit_id(parent_id: str, rows_sha: str) -> str:
    """Deterministic id of the refit of ``parent_id`` on the rows hashed by ``rows_sha``."""
    key = json.dumps(["refit", parent_id, rows_sha], separators=(",", ":"))
    return "c-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def refit_rows(prepared: PreparedSweep, slice_id: str) -> tuple[np.ndarray, int]:
    """The parent slice's rows plus the holdout rows of its population; and how many were added."""
    piece = next((s for s in prepared.slices if s.slice_id == slice_id), None)
    if piece is None:
        known = ", ".join(s.slice_id for s in prepared.slices)
        raise RefitError(
            f"slice {slice_id!r} is not one the sweep's config cuts from its dataset today "
            f"(it cuts: {known}); the data or config changed since the sweep; refit needs the "
            "sweep's own data, so run a new sweep instead"
        )
    holdout = prepared.holdout.rows
    if piece.strategy == "segment":  # only the holdout rows of the slice's own segment
        values = prepared.dataset.segments[piece.params["column"]][holdout]
        holdout = holdout[values == piece.params["value"]]
    rows = np.union1d(piece.rows, holdout).astype(np.int64)
    return rows, int(len(rows) - len(np.unique(piece.rows)))


def _warm_refit_rows(prepared: PreparedSweep, parent: CandidateRecord) -> tuple[np.ndarray, int]:
    """A warm start's rows (the newest before the holdout, as it counted them) plus the holdout."""
    n_rows = int(parent.lineage[WARM_LINEAGE]["rows"])
    holdout = prepared.holdout.rows
    rows = np.union1d(warm_rows(prepared.holdout.start, n_rows), holdout).astype(np.int64)
    return rows, int(len(holdout))


#: The device rules a refit must keep wherever its parent keeps them, whatever the sweep's
#: policy allows: a refit ships in its parent's place, so it must fit the device as well.
_DEVICE_FIT = RankingPolicy(name="refit device fit", within_memory_budget=True,
                            allow_cpu_fallback=False, respect_device_eligibility=True)


def _check(parent: CandidateRecord, refit: CandidateRecord, max_drop: float | None,
           holdout_rows: int = 0) -> dict[str, Any]:
    """Per device: parent's accuracy, the refit's in-sample one; RefitError if a check fails.

    ``max_drop`` None: :func:`allowed_drop` for the parent's accuracy on ``holdout_rows``.

    The device checks are the leaderboard's own rules (``DEVICE_RULES``:
    device eligibility, CPU fallback, memory budget), read from the same
    columns; a refit may not break one its parent keeps.
    """
    checks: dict[str, Any] = {}
    for before in parent.devices:
        if before.status != "ok":
            continue
        after = refit.device(before.device)
        if after is None or after.status != "ok":
            error = after.error if after is not None else "not run"
            raise RefitError(f"the refit of {parent.candidate_id} failed on device "
                             f"{before.device!r} ({error}); nothing was promoted")
        kept = {v.rule for v in row_violations(board_row(parent, before), _DEVICE_FIT, DEVICE_RULES)}
        broken = [v.message for v in row_violations(board_row(refit, after), _DEVICE_FIT, DEVICE_RULES)
                  if v.rule not in kept]
        if broken:
            raise RefitError(
                f"the refit of {parent.candidate_id} does not fit device {before.device!r} though "
                f"its parent does: {'; '.join(broken)}; nothing was promoted; promote the parent "
                "without --refit"
            )
        if before.accuracy is not None and after.accuracy is not None:
            drop = before.accuracy - after.accuracy
            allowed = max_drop if max_drop is not None else allowed_drop(before.accuracy, holdout_rows)
            if drop > allowed:
                raise RefitError(
                    f"the refit of {parent.candidate_id} scores {after.accuracy:.4f} on device "
                    f"{before.device!r} on holdout rows it trained on, {drop:.4f} below its "
                    f"parent's {before.accuracy:.4f} on rows it never saw (allowed: {allowed:.4g}); "
                    "the refit did not train properly; nothing was promoted; promote the parent "
                    "without --refit"
                )
            checks[before.device] = {"parent_accuracy": before.accuracy,
                                     "in_sample_accuracy": after.accuracy,
                                     "allowed_drop": round(allowed, 6)}
    return checks


def _unranked(result: DeviceResult, parent_id: str) -> DeviceResult:
    """The refit's device result, labelled: its holdout accuracy is in-sample."""
    return replace(result, extra={**result.extra, "accuracy_in_sample": True, "refit_of": parent_id})


@dataclass(frozen=True)
class RefitPlan:
    """A refit ready to train: the task (:func:`run_candidate` on ``spec`` and ``data``) and its parent.

    ``stored`` is the refit already in the store, if this parent was refit on
    these rows before (then there is nothing to train).
    """

    parent: CandidateRecord
    spec: CandidateSpec
    data: SweepData
    rows: int
    holdout_rows_added: int
    stored: CandidateRecord | None = None


def _refittable(store: Store, candidate_id: str) -> CandidateRecord:
    """The candidate, if it may be refit (not a refit itself, ran ok); RefitError otherwise."""
    parent = store.get_candidate(candidate_id)
    if parent.refit_of:
        raise RefitError(f"candidate {candidate_id!r} is already a refit (of {parent.refit_of}); "
                         f"promote it as it is, or refit {parent.refit_of}")
    if parent.status != "ok":
        raise RefitError(f"only a candidate that ran ok can be refit; {candidate_id!r} has "
                         f"status {parent.status!r} ({parent.error or 'no error recorded'})")
    return parent


def plan_refit(
    store: Store, candidate_id: str, *, config_path: Path | None = None,
    prepared: PreparedSweep | None = None,
) -> RefitPlan:
    """Everything a refit needs, checked, with no side effect; RefitError/NotFoundError if it cannot be made.

    ``config_path`` resolves a sweep whose dataset was named by a relative path.
    ``prepared``, the candidate's sweep as planned in this process (a driver that
    refits several of its candidates), saves loading its dataset again.
    """
    parent = _refittable(store, candidate_id)
    if prepared is None:
        prepared = prepare_stored_sweep(store, parent, config_path)
    elif prepared.sweep_id != parent.sweep_id:
        raise RefitError(f"candidate {candidate_id!r} belongs to sweep {parent.sweep_id!r}, not to "
                         f"the prepared sweep {prepared.sweep_id!r} passed with it")
    if parent.family == ENSEMBLE_FAMILY:  # no single training task: only a stored refit is planned
        plan = _ensemble_plan(store, parent, prepared)[0]
        if plan.stored is None:
            raise RefitError(f"candidate {candidate_id!r} is an ensemble: it is refit by refitting "
                             "its members and combining them again, which refit_candidate does "
                             "(`shadow promote --refit`), not a single training task")
        return plan
    init = continued_from(parent)
    rows, added = (_warm_refit_rows(prepared, parent) if init else
                   refit_rows(prepared, parent.slice_id))
    new_id = refit_id(candidate_id, rows_sha256(rows))
    slice_id = parent.slice_id + SLICE_SUFFIX
    data = replace(sweep_data(prepared), slice_rows={slice_id: rows},
                   devices=tuple(d.device for d in parent.devices if d.status == "ok"),
                   init_models={init: store.artifacts.read_verified(init)} if init else {})
    spec = CandidateSpec(new_id, slice_id, parent.family, dict(parent.params), parent.seed,
                         init_model=init)
    try:
        stored: CandidateRecord | None = store.get_candidate(new_id)
    except NotFoundError:
        stored = None
    return RefitPlan(parent, spec, data, int(len(rows)), added, stored)


def finish_refit(
    store: Store, plan: RefitPlan, outcome: CandidateOutcome, *, max_drop: float | None = None,
) -> CandidateRecord:
    """Check the trained refit against its parent, label it and store it (only the driver writes)."""
    if plan.stored is not None:
        return plan.stored
    parent, record = plan.parent, outcome.record
    if record.status != "ok":
        raise RefitError(f"the refit of {parent.candidate_id} failed: {record.error}; "
                         "nothing was promoted")
    holdout = store.get_sweep(parent.sweep_id).holdout
    refit: dict[str, Any] = {
        "of": parent.candidate_id, "slice_id": parent.slice_id, "rows": plan.rows,
        "holdout_rows_added": plan.holdout_rows_added, "holdout": [holdout.start, holdout.stop],
        "holdout_data_sha256": holdout.data_sha256, "max_drop": max_drop,
        "checks": _check(parent, record, max_drop, holdout.n_rows),
    }
    if parent.lineage.get("trial") is not None:
        refit["trial"] = parent.lineage["trial"]
    lineage = {**record.lineage, "refit": refit}
    if WARM_LINEAGE in parent.lineage:  # what it continued, for the next period's warm start
        lineage[WARM_LINEAGE] = parent.lineage[WARM_LINEAGE]
    record = replace(record, refit_of=parent.candidate_id, lineage=lineage,
                     devices=tuple(_unranked(d, parent.candidate_id) for d in record.devices))
    try:
        store.add_candidate(record, outcome.artifacts)
    except StoreError as exc:  # e.g. a concurrent refit stored the same id first
        try:
            return store.get_candidate(record.candidate_id)
        except NotFoundError:
            raise RefitError(f"the refit of {parent.candidate_id} could not be stored: {exc}") from None
    return record


def refit_candidate(
    store: Store, candidate_id: str, *, max_drop: float | None = None,
    config_path: Path | None = None, on_train: Callable[[RefitPlan], None] | None = None,
) -> CandidateRecord:
    """Refit ``candidate_id`` on its slice plus the holdout, in this process; store and return it.

    Returns the stored refit if this candidate was refit on the same rows
    before. Raises NotFoundError for an unknown candidate and RefitError when
    the refit cannot be made or fails a check (nothing is stored then).
    ``on_train`` is called once everything is checked, just before training
    starts (the CLI says so there: a refit that cannot be made prints one line).
    """
    parent = _refittable(store, candidate_id)
    if parent.family == ENSEMBLE_FAMILY:
        return _refit_ensemble(store, parent, max_drop, config_path, on_train)
    plan = plan_refit(store, candidate_id, config_path=config_path)
    if plan.stored is not None:
        return plan.stored
    if on_train is not None:
        on_train(plan)
    return finish_refit(store, plan, run_candidate(plan.spec, plan.data), max_drop=max_drop)


def _ensemble_plan(store: Store, parent: CandidateRecord,
                   prepared: PreparedSweep) -> tuple[RefitPlan, list[RefitPlan]]:
    """An ensemble's refit (on every row its members' refits train on) and its members' refit plans.

    Its id hashes the members' refit ids, which hash their rows: deterministic like any refit's.
    """
    members = [plan_refit(store, m, prepared=prepared) for m in parent.params["members"]]
    rows = np.unique(np.concatenate([p.data.slice_rows[p.spec.slice_id] for p in members]))
    added = len(rows) - len(member_rows(prepared, [p.parent for p in members]))
    ids = json.dumps([p.spec.candidate_id for p in members], separators=(",", ":"))
    new_id = refit_id(parent.candidate_id, hashlib.sha256(ids.encode()).hexdigest())
    slice_id = parent.slice_id + SLICE_SUFFIX
    data = replace(sweep_data(prepared), slice_rows={slice_id: rows.astype(np.int64)},
                   devices=tuple(d.device for d in parent.devices if d.status == "ok"))
    spec = CandidateSpec(new_id, slice_id, parent.family, dict(parent.params), parent.seed)
    try:
        stored: CandidateRecord | None = store.get_candidate(new_id)
    except NotFoundError:
        stored = None
    return RefitPlan(parent, spec, data, int(len(rows)), int(added), stored), members


def _refit_ensemble(store: Store, parent: CandidateRecord, max_drop: float | None, config_path: Path | None,
                    on_train: Callable[[RefitPlan], None] | None) -> CandidateRecord:
    """Refit each member (stored refits reused), combine them with the parent's weights, check, store."""
    plan, member_plans = _ensemble_plan(store, parent, prepare_stored_sweep(store, parent, config_path))
    if plan.stored is not None:
        return plan.stored
    if on_train is not None:
        on_train(plan)
    refits = [p.stored or finish_refit(store, p, run_candidate(p.spec, p.data), max_drop=max_drop)
              for p in member_plans]
    lineage = {"ensemble": {**parent.lineage.get("ensemble", {}),
                            "member_refits": [r.candidate_id for r in refits]}}
    record = CandidateRecord(
        candidate_id=plan.spec.candidate_id, sweep_id=parent.sweep_id, slice_id=plan.spec.slice_id,
        family=parent.family, params=dict(parent.params), seed=parent.seed, status="ok",
        lineage=lineage, train_seconds=float(sum(r.train_seconds or 0.0 for r in refits)))
    try:
        outcome = ensemble_outcome(store, record, refits, list(parent.params["weights"]), plan.data,
                                   plan.data.slice_rows[plan.spec.slice_id])
    except EnsembleError as exc:
        raise RefitError(f"the refit of ensemble {parent.candidate_id} could not be combined: {exc}; "
                         "nothing was promoted") from None
    return finish_refit(store, plan, outcome, max_drop=max_drop)


__all__ = ["allowed_drop", "RefitPlan", "finish_refit", "plan_refit", "refit_candidate", "refit_id",
           "refit_rows"]
