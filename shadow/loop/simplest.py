"""A trained challenger must beat the sweep's baselines with evidence, or a baseline is chosen.

On a stream without signal, the sweep's rank 1 on one short holdout is the luckiest of its
models, not a better one: on the catalog's S&P 500 stream the loop served trained MLPs at 0.51
while "always up" scored 0.54. With ``[model] baselines`` (the class prior on every slice), the
loop takes the trained challenger it picked (rank 1, or the holdout expert of the track record)
only if it is significantly more accurate than the baseline trained on the most rows (the
steadiest one: the prior of all history, not the prior that happened to fit this holdout), on
the holdout rows both predicted, by the exact one-sided McNemar test at the sweep's ``[gate]
alpha`` divided by the number of trained candidates (rank 1 was chosen on these very rows, so
its p-value alone would be optimistic: Bonferroni's bound keeps the chance that a no-signal
sweep's best passes at most alpha). Otherwise the baseline is the challenger. A stream with
signal is unchanged: there the trained models beat the prior by many points. A track record
that follows a strategy's own expert is not overruled (its evidence is many periods, not one
holdout). The comparison and its outcome are stored with the gate event (``selection.baseline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from selection.records import HOST_DEVICE

if TYPE_CHECKING:
    from selection.store import Store



@dataclass(frozen=True)
class BaselineCheck:
    """The challenger after the check, and the evidence (stored with the gate event)."""

    challenger: str
    evidence: dict[str, Any]


def simplest_first(store: Store, sweep_id: str, challenger: str) -> BaselineCheck | None:
    """``challenger`` against the sweep's best baseline; None without baselines (or when the
    challenger is one, or predictions to pair are missing)."""
    from selection.artifacts.arrays import decode_array
    from selection.errors import PromotionError
    from selection.gate.paired import load_holdout
    from selection.gate.policy import gate_from_config
    from selection.gate.stats import mcnemar_exact
    from shadow.loop.track_record import ranked_candidates

    ranked = ranked_candidates(store, sweep_id)
    baselines = {cid: family for cid, _, _, family in ranked if family}
    trained = len(ranked) - len(baselines)
    if not baselines or challenger in baselines:
        return None
    rows = {s.slice_id: s.n_rows for s in store.get_slices(sweep_id)}
    by_slice = {cid: slice_id for cid, slice_id, _, family in ranked if family}
    # The most rows first; among equals the better-ranked (ranked is in rank order).
    baseline = max(baselines, key=lambda cid: rows.get(by_slice[cid], 0))
    family = baselines[baseline]
    sweep = store.get_sweep(sweep_id)
    try:
        labels = load_holdout(store, sweep).labels
    except PromotionError:  # a sweep of an old release stored no holdout: nothing to pair on
        return None
    correct = []
    for cid in (challenger, baseline):
        result = store.get_candidate(cid).device(HOST_DEVICE)
        if result is None or result.predictions_sha256 is None:
            return None
        predictions = decode_array(store.artifacts.read_verified(result.predictions_sha256))
        if predictions.shape != labels.shape:
            return None
        correct.append(predictions.astype(np.int64) == labels)
    alpha = gate_from_config(sweep.config.get("gate") or {}, "sweep [gate]").alpha / max(1, trained)
    test = mcnemar_exact(correct[0], correct[1], "greater")
    beats = test.p_value < alpha
    evidence = {
        "baseline": baseline, "family": family, "alpha": round(alpha, 6), "trained_candidates": trained,
        "p_value": round(test.p_value, 6),
        "challenger_accuracy": round(float(correct[0].mean()), 6),
        "baseline_accuracy": round(float(correct[1].mean()), 6),
        "kept": "challenger" if beats else "baseline",
        "reason": (f"{challenger} beats baseline {baseline} ({family}) on the holdout (p = "
                   f"{test.p_value:.3g} < alpha {alpha:.3g} over {trained} trained)" if beats else
                   f"{challenger} is not significantly more accurate than baseline {baseline} "
                   f"({family}) on the holdout (p = {test.p_value:.3g}, alpha {alpha:.3g} over "
                   f"{trained} trained): the baseline is the challenger"),
    }
    return BaselineCheck(challenger if beats else baseline, evidence)
