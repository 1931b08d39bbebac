"""The warm-start candidate: the channel's champion trained further on the newest rows.

A fleet retrained from scratch once a period cannot follow a stream whose
recent rows matter most; the champion, continued for a few epochs on the rows
that arrived since (``[warm_start]``: the newest ``rows`` before the holdout, a
smaller learning rate), costs seconds and keeps what it knew. After a sweep's
candidates, :func:`build_warm_start` makes that candidate from the champion's
stored fp32 graph (its weights read back by
:func:`shadow.models.weights.load_onnx_weights`: artifacts are never pickles)
and runs it like any other (:func:`shadow.sweep.task.run_candidate`: exported,
verified, quantized and compiled for every device). It is stored in the sweep
under slice ``warm-start-<rows>``, so the leaderboard ranks it, the gate judges
it against the champion on the same holdout rows, the track record learns how
the strategy does, and ``promote --refit`` continues it on the holdout too.

No champion, a champion of another dataset or signature, an ensemble champion
(a vote has no single training loop), a champion of a user family this sweep
does not name (a warm start imports no code the sweep file did not ask for),
or one trained on rows of this sweep's holdout (a refit promoted without new
rows since: the warm start would be scored on rows its weights have seen):
no warm start, and the reason is returned, not stored (it is not a failure of
the sweep). The learning rate is scaled where the family calls it ``lr``
(the built-ins do); a family with another name for it keeps its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from selection.channels.promotion import current
from selection.errors import NotFoundError
from selection.records import CandidateRecord
from selection.signature import ModelSignature
from selection.store import Store
from shadow.data.slicing.base import rows_sha256
from shadow.models.external import is_family_path
from shadow.sweep.config import BASELINE_FAMILIES, WarmStartConfig
from shadow.sweep.ensemble import ENSEMBLE_FAMILY
from shadow.sweep.plan import CandidateSpec
from shadow.sweep.prepare import PreparedSweep, sweep_data
from shadow.sweep.task import SweepData, run_candidate

#: Slice ids of warm starts begin so (``warm-start-<rows>``).
SLICE_PREFIX = "warm-start-"
#: The lineage key that records what a warm start continued.
LINEAGE_KEY = "warm_start"


@dataclass(frozen=True)
class WarmStart:
    """A warm start ready to train (``spec`` on ``data``), or why there is none (``skipped``)."""

    spec: CandidateSpec | None = None
    data: SweepData | None = None
    lineage: dict[str, Any] | None = None
    skipped: str | None = None


def warm_rows(holdout_start: int, rows: int) -> np.ndarray:
    """The newest ``rows`` rows before the holdout (fewer if the data has fewer)."""
    return np.arange(max(0, holdout_start - rows), holdout_start, dtype=np.int64)


def warm_params(params: dict[str, Any], settings: WarmStartConfig) -> dict[str, Any]:
    """The champion's params with the warm start's epochs and a smaller learning rate.

    ``min_steps`` and ``early_stopping`` are set to 0 where the family has them: a warm start
    trains the epochs ``[warm_start]`` asks for (seconds), not a fresh model's floor of steps
    and its scouting run.
    """
    out = {**params, "epochs": settings.epochs}
    for key in ("min_steps", "early_stopping"):
        if key in out:
            out[key] = 0
    if isinstance(out.get("lr"), (int, float)):
        out["lr"] = float(out["lr"]) * settings.lr_scale
    return out


def plan_warm_start(store: Store, prepared: PreparedSweep, settings: WarmStartConfig) -> WarmStart:
    """The warm-start candidate of ``prepared``'s sweep from ``settings.channel``'s champion."""
    now = current(store, settings.channel)
    if now is None:
        return WarmStart(skipped=f"channel {settings.channel!r} has no champion yet")
    champion = store.get_candidate(now.candidate_id)
    reason = _unsuitable(champion, prepared) or _seen_holdout(store, champion, prepared)
    if reason:
        return WarmStart(skipped=f"champion {champion.candidate_id} {reason}")
    n_rows = settings.rows or len(prepared.holdout.rows)
    rows = warm_rows(prepared.holdout.start, n_rows)
    # A champion that is itself a warm start (or its refit) is continued from the params it
    # was first trained with: the learning rate is scaled once, not once per period.
    earlier = champion.lineage.get(LINEAGE_KEY) if isinstance(champion.lineage, dict) else None
    base = earlier.get("base_params") if isinstance(earlier, dict) else None
    base = dict(base) if isinstance(base, dict) else dict(champion.params)
    params = warm_params(base, settings)
    sha = champion.onnx_sha256 or ""
    key = json.dumps(["warm-start", prepared.sweep_id, champion.candidate_id, sha,
                      rows_sha256(rows), params, prepared.config.seed],
                     sort_keys=True, separators=(",", ":"))
    slice_id = f"{SLICE_PREFIX}{n_rows}"
    spec = CandidateSpec("c-" + hashlib.sha256(key.encode()).hexdigest()[:12], slice_id,
                         champion.family, params, prepared.config.seed, init_model=sha)
    data = replace(sweep_data(prepared), slice_rows={slice_id: rows},
                   init_models={sha: store.artifacts.read_verified(sha)})
    lineage = {"from": champion.candidate_id, "channel": settings.channel,
               "history_id": now.history_id, "from_sha256": sha, "rows": int(len(rows)),
               "epochs": settings.epochs, "lr_scale": settings.lr_scale, "base_params": base}
    return WarmStart(spec, data, lineage)


def build_warm_start(store: Store, prepared: PreparedSweep,
                     settings: WarmStartConfig) -> CandidateRecord | str:
    """Train, evaluate and store the warm start; the stored record, or why there is none.

    Built in this process (seconds: a few epochs of a trained model on one
    period's rows). A candidate that fails (e.g. a champion graph whose tensors
    do not load) is a failed row, as any candidate's failure is.
    """
    plan = plan_warm_start(store, prepared, settings)
    if plan.spec is None or plan.data is None:
        return plan.skipped or "no warm start"
    try:
        return store.get_candidate(plan.spec.candidate_id)
    except NotFoundError:
        pass
    outcome = run_candidate(plan.spec, plan.data)
    record = replace(outcome.record,
                     lineage={**outcome.record.lineage, LINEAGE_KEY: plan.lineage})
    store.add_candidate(record, outcome.artifacts)
    return record


def continued_from(record: CandidateRecord) -> str | None:
    """The sha256 of the model a warm-start candidate continued (None for any other)."""
    warm = record.lineage.get(LINEAGE_KEY) if isinstance(record.lineage, dict) else None
    return str(warm["from_sha256"]) if isinstance(warm, dict) and warm.get("from_sha256") else None


def trained_until(store: Store, champion: CandidateRecord) -> int:
    """The row after the last one ``champion`` was trained on (rows are positions in time).

    A refit trained through its sweep's holdout; any other candidate (a warm
    start too) on rows before it.
    """
    refit = champion.lineage.get("refit") if isinstance(champion.lineage, dict) else None
    if isinstance(refit, dict) and isinstance(refit.get("holdout"), list):
        return int(refit["holdout"][1])
    return int(store.get_sweep(champion.sweep_id).holdout.start)


def _seen_holdout(store: Store, champion: CandidateRecord, prepared: PreparedSweep) -> str | None:
    reach, start = trained_until(store, champion), prepared.holdout.start
    if reach > start:
        return (f"was trained on rows up to {reach - 1}, inside this sweep's holdout (from row "
                f"{start}): continued, it would be scored on rows it has seen; it is continued "
                "once new rows push the holdout past them")
    return None


def _unsuitable(champion: CandidateRecord, prepared: PreparedSweep) -> str | None:
    if champion.family == ENSEMBLE_FAMILY:
        return "is an ensemble (a weighted vote has no single model to train further)"
    if champion.family in BASELINE_FAMILIES:
        return f"is a baseline ({champion.family}: no weights on the features to train further)"
    if not champion.onnx_sha256:
        return "has no stored model"
    if is_family_path(champion.family) and champion.family != prepared.config.family:
        return (f"is of family {champion.family!r}, which this sweep does not name ([model] "
                f"family = {prepared.config.family!r}); a warm start imports no other code")
    dataset = prepared.dataset
    lineage = champion.lineage if isinstance(champion.lineage, dict) else {}
    if lineage.get("dataset") not in (None, dataset.name):
        return f"was trained on dataset {lineage.get('dataset')!r}, not {dataset.name!r}"
    signature = ModelSignature.from_lineage(champion.lineage)
    if signature is None or tuple(signature.features or ()) != tuple(dataset.feature_names) \
            or tuple(signature.classes or ()) != tuple(dataset.classes):
        return (f"does not take this sweep's inputs and classes ({dataset.name}: "
                f"{len(dataset.feature_names)} features, classes {list(dataset.classes)})")
    return None
