"""Is the canary worse than the model it replaces? The test a staged rollout rolls back on.

The canary and the previous model answer *different* requests (different
devices), so the gate's exact McNemar test (``selection.gate.stats``, which
needs both models on the same rows) does not fit. This is the one-sided
two-proportion z-test with a pooled variance, computed with ``math.erfc``
(standard library, no scipy): the same test on accuracy (labelled requests)
and on error rates (failed predictions).

A verdict is only reached with at least ``min_labelled`` labelled requests on
each side (``min_predictions`` for errors): below that a rollout waits, so a
canary is never rolled back, or widened on evidence, on a handful of labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Action = Literal["rollback", "widen", "wait"]


@dataclass(frozen=True)
class Arm:
    """One side's counts, summed over the devices that ran its model."""

    predictions: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0

    def __add__(self, other: Arm) -> Arm:
        return Arm(self.predictions + other.predictions, self.errors + other.errors,
                   self.labelled + other.labelled, self.correct + other.correct)

    @property
    def accuracy(self) -> float | None:
        """Share of labelled requests answered right (None without labels)."""
        return self.correct / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Verdict:
    """What the evidence says to do now, and why, with the numbers (an event's evidence)."""

    action: Action
    reason: str
    canary: Arm
    control: Arm
    p_worse_accuracy: float | None
    p_more_errors: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, stored with the rollout event it caused."""
        return {"verdict": self.action, "test_reason": self.reason, "canary": asdict(self.canary),
                "control": asdict(self.control), "p_worse_accuracy": self.p_worse_accuracy,
                "p_more_errors": self.p_more_errors}


def p_lower(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value of "rate 1 < rate 2" (two-proportion z-test, pooled); 1.0 if undefined."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 1.0 if k1 / n1 >= k2 / n2 else 0.0
    z = (k1 / n1 - k2 / n2) / math.sqrt(var)
    return 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z)


def judge(canary: Arm, control: Arm, *, alpha: float, min_labelled: int,
          min_predictions: int) -> Verdict:
    """``rollback`` if the canary is significantly worse (accuracy or errors), ``widen`` if the
    labels say it is not worse, else ``wait``."""
    p_err = None
    if canary.predictions >= min_predictions and control.predictions >= min_predictions:
        # "more errors" is "a lower share of successes".
        p_err = p_lower(canary.predictions - canary.errors, canary.predictions,
                        control.predictions - control.errors, control.predictions)
        if p_err < alpha and canary.errors > 0:
            return Verdict("rollback", f"errors rose: {canary.errors}/{canary.predictions} "
                           f"predictions failed on the canary vs {control.errors}/"
                           f"{control.predictions} on the previous model (one-sided p = "
                           f"{p_err:.2g} < {alpha:g})", canary, control, None, p_err)
    if canary.labelled < min_labelled or control.labelled < min_labelled:
        return Verdict("wait", f"{canary.labelled} labelled requests on the canary and "
                       f"{control.labelled} on the previous model; {min_labelled} each are "
                       "needed to judge", canary, control, None, p_err)
    p_acc = p_lower(canary.correct, canary.labelled, control.correct, control.labelled)
    ca, co = canary.accuracy or 0.0, control.accuracy or 0.0
    if p_acc < alpha:
        return Verdict("rollback", f"the canary is worse: accuracy {ca:.3f} on "
                       f"{canary.labelled} labelled requests vs {co:.3f} on {control.labelled} "
                       f"for the previous model (one-sided p = {p_acc:.2g} < {alpha:g})",
                       canary, control, p_acc, p_err)
    return Verdict("widen", f"the canary is not worse: accuracy {ca:.3f} on {canary.labelled} "
                   f"labelled requests vs {co:.3f} on {control.labelled} (one-sided p = "
                   f"{p_acc:.2g} >= {alpha:g})", canary, control, p_acc, p_err)
