"""A trained challenger must beat the sweep's baselines with evidence, or a baseline is chosen.

On a stream without signal, the sweep's rank 1 on one short holdout is the luckiest of its
models, not a better one: on the catalog's S&P 500 stream the loop served trained MLPs at 0.51
while "always up" scored 0.54. With ``[model] baselines`` (the class prior on every slice), the
loop takes the challenger it picked (rank 1, or the track record's pick) only if it is
significantly more accurate than the best-ranked baseline on the holdout rows both predicted,
by the exact one-sided McNemar test at the sweep's ``[gate] alpha``; otherwise the baseline is
the challenger. A stream with signal is unchanged: there the trained models beat the prior by
many points. The comparison and its outcome are stored with the gate event (``selection.baseline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from selection.records import HOST_DEVICE

if TYPE_CHECKING:
    from selection.store import Store

#: ``[gate] alpha`` when a sweep's file has none.
DEFAULT_ALPHA = 0.05


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
    from selection.gate.stats import mcnemar_exact
    from shadow.loop.track_record import ranked_candidates

    ranked = ranked_candidates(store, sweep_id)
    baselines = [(cid, family) for cid, _, _, family in sorted(ranked, key=lambda r: r[2]) if family]
    if not baselines or challenger in {cid for cid, _ in baselines}:
        return None
    baseline, family = baselines[0]
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
    alpha = float((sweep.config.get("gate") or {}).get("alpha", DEFAULT_ALPHA))
    test = mcnemar_exact(correct[0], correct[1], "greater")
    beats = test.p_value < alpha
    evidence = {
        "baseline": baseline, "family": family, "alpha": alpha, "p_value": round(test.p_value, 6),
        "challenger_accuracy": round(float(correct[0].mean()), 6),
        "baseline_accuracy": round(float(correct[1].mean()), 6),
        "kept": "challenger" if beats else "baseline",
        "reason": (f"{challenger} beats baseline {baseline} ({family}) on the holdout (p = "
                   f"{test.p_value:.3g} < {alpha:g})" if beats else
                   f"{challenger} is not significantly more accurate than baseline {baseline} "
                   f"({family}) on the holdout (p = {test.p_value:.3g}, alpha {alpha:g}): the "
                   "baseline is the challenger"),
    }
    return BaselineCheck(challenger if beats else baseline, evidence)
