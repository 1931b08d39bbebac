"""What the system is compared with at each sweep: fixed retraining rules and ablation channels.

After each sweep the controller ran, every slice's best candidate (by holdout accuracy) is refit
on its slice plus the holdout, as Ray tasks (the system's own refit is one of them and is reused,
not trained twice). A *fixed retraining rule* always deploys one slice's refit: "retrain on all
history", "retrain on the last N rows", whatever slices the sweep file declares; the hindsight
oracle over those refits bounds what choosing among them could reach. Two ablation channels take
the same challenger through the strict gate (significantly better), with and without refit, to
show what the configured gate and refit buy on the user's own data.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from selection.errors import GateRefused, ShadowError
from selection.gate.policy import gate_from_config
from selection.records import HOST_DEVICE, CandidateRecord
from selection.store import Store
from shadow.errors import RefitError
from shadow.sweep.ensemble import ENSEMBLE_FAMILY

#: Ablation channel suffix -> (refit?, gate requirement).
ABLATIONS = {"refit-improvement": (True, "improvement"), "gate-only": (False, "improvement")}


def ok_candidates(store: Store, sweep_id: str) -> list[CandidateRecord]:
    """The sweep's candidates that ran and scored on the host (refits aside), in stored order."""
    keep = []
    for record in store.list_candidates(sweep_id):
        result = record.device(HOST_DEVICE)
        if (record.refit_of or record.status != "ok" or result is None or result.status != "ok"
                or result.accuracy is None or not record.onnx_sha256):
            continue
        keep.append(record)
    return keep


def slice_bests(records: list[CandidateRecord], skip_families: frozenset[str] = frozenset(),
                ) -> dict[str, str]:
    """Slice id -> its candidate with the best holdout accuracy (what retraining on it deploys).

    ``skip_families``: the sweep's ``[model] baselines``: a fixed rule retrains the sweep's own
    model on its slice, so it is the same rule with or without baselines in the sweep. The
    sweep's ensemble is never a rule either: it is a choice among the slices (the system's, with
    ``[watch.selection] policy = "ensemble"``), not one slice retrained.
    """
    best: dict[str, tuple[float, str]] = {}
    for record in records:
        if record.family in skip_families or record.family == ENSEMBLE_FAMILY:
            continue
        accuracy = record.device(HOST_DEVICE).accuracy  # type: ignore[union-attr]
        assert accuracy is not None
        if record.slice_id not in best or accuracy > best[record.slice_id][0]:
            best[record.slice_id] = (accuracy, record.candidate_id)
    return {slice_id: candidate for slice_id, (_, candidate) in best.items()}


def refit_all(store: Store, parents: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Refit ``parents`` as parallel Ray tasks; the driver stores them. Ids by parent, refusals."""
    import ray

    from shadow.sweep.refit import RefitPlan, finish_refit, plan_refit, refit_candidate
    from shadow.sweep.task import run_candidate

    remote = ray.remote(num_cpus=1)(run_candidate)
    plans: dict[Any, RefitPlan] = {}
    done: dict[str, str] = {}
    errors: dict[str, str] = {}
    for parent in parents:
        try:
            plan = plan_refit(store, parent)
        except RefitError as exc:
            errors[parent] = str(exc)
            continue
        if plan.stored is not None:
            done[parent] = plan.stored.candidate_id
        else:
            plans[remote.remote(plan.spec, plan.data)] = plan
    for ref, plan in plans.items():
        try:
            done[plan.parent.candidate_id] = finish_refit(store, plan, ray.get(ref)).candidate_id
        except RefitError as exc:
            errors[plan.parent.candidate_id] = str(exc)
    # An ensemble refits its members (single trainings, mostly done above) and recombines them:
    # the product's own path, in the driver.
    for parent in [p for p in errors if store.get_candidate(p).family == ENSEMBLE_FAMILY]:
        try:
            done[parent] = refit_candidate(store, parent).candidate_id
        except RefitError as exc:
            errors[parent] = str(exc)
        else:
            del errors[parent]
    return done, errors


def gate_ablations(store: Store, challenger: str, channel: str, refits: dict[str, str],
                   reason: str) -> dict[str, bool]:
    """Gate ``challenger`` into each ablation channel of ``channel``; channel -> promoted?"""
    from selection.gate.decision import promote_through_gate

    sweep = store.get_sweep(store.get_candidate(challenger).sweep_id)
    policy = gate_from_config(sweep.config.get("gate", {}), "the sweep's [gate]")
    promoted: dict[str, bool] = {}
    for suffix, (refit, require) in ABLATIONS.items():
        name = f"{channel}-{suffix}"
        if refit and challenger not in refits:  # its refit was refused: nothing to ship there
            promoted[name] = False
            continue
        ship = (lambda cid: refits[cid]) if refit else None
        try:
            promote_through_gate(store, challenger, channel=name, reason=reason, refit=ship,
                                 gate=replace(policy, require=require))
        except GateRefused:
            promoted[name] = False
        except ShadowError:  # a refit refused by its checks: that channel keeps its model
            promoted[name] = False
        else:
            promoted[name] = True
    return promoted
