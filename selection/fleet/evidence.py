"""Is the canary worse than the model it replaces? The test a staged rollout rolls back on.

The canary and the previous model answer *different* requests (different
devices), so the gate's exact McNemar test (``selection.gate.stats``, which
needs both models on the same rows) does not fit. This is the one-sided
two-proportion z-test with a pooled variance, computed with ``math.erfc``
(standard library, no scipy): the same test on accuracy (labelled requests)
and on error rates (failed predictions).

Repeated looks. The fleet server sees the counts grow every fraction of a
second; re-running a level-``alpha`` test on each tick and rolling back the
first time it fires rolls back identical models far more often than ``alpha``
(60 looks at alpha 0.01: about 7 %). So each test is judged only at *planned
looks*: when the smaller side's count first reaches ``minimum * 2**j``
(200, 400, 800, ... labelled requests for ``min_labelled`` 200), at most
``max_looks`` of them, each at level ``alpha / (2 * max_looks)`` (Bonferroni:
half of ``alpha`` for accuracy, half for errors, each split evenly over its
looks). Whatever the counts do between looks, and however the looks are
correlated, the chance that identical models are rolled back is at most
``alpha`` in total. A look the counts jumped past is merged into the next
(its share of ``alpha`` is left unspent, which only makes the test stricter).
After the last planned look the accuracy verdict stands (no further rollback
on labels). The looks already taken travel in :class:`Looks`; the server keeps
them as the rollout's ``look`` events, so a restart does not look again.

A verdict is only reached with at least ``min_labelled`` labelled requests on
each side (``min_predictions`` for errors): below that a rollout waits, so a
canary is never rolled back, or widened on evidence, on a handful of labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
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
class Looks:
    """The planned looks a rollout already spent, and what the newest accuracy look found."""

    accuracy: int = 0
    errors: int = 0
    not_worse: bool = False  # the newest accuracy look found the canary not worse

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Looks:
        """What a ``look`` event stored (none yet if ``data`` is None)."""
        if not data:
            return cls()
        return cls(int(data.get("accuracy", 0)), int(data.get("errors", 0)),
                   bool(data.get("not_worse", False)))


def planned_looks(n: int, minimum: int, max_looks: int) -> int:
    """How many planned looks ``n`` has reached: thresholds ``minimum * 2**j``, at most ``max_looks``."""
    reached, threshold = 0, minimum
    while reached < max_looks and n >= threshold:
        reached, threshold = reached + 1, threshold * 2
    return reached


@dataclass(frozen=True)
class Verdict:
    """What the evidence says to do now, and why, with the numbers (an event's evidence)."""

    action: Action
    reason: str
    canary: Arm
    control: Arm
    p_worse_accuracy: float | None
    p_more_errors: float | None
    looks: Looks = Looks()  # the looks spent, this one included
    looked: bool = False  # whether a planned look was taken now (the server records it)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, stored with the rollout event it caused."""
        return {"verdict": self.action, "test_reason": self.reason, "canary": asdict(self.canary),
                "control": asdict(self.control), "p_worse_accuracy": self.p_worse_accuracy,
                "p_more_errors": self.p_more_errors, "looks": asdict(self.looks)}


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


def judge(canary: Arm, control: Arm, *, alpha: float, min_labelled: int, min_predictions: int,
          max_looks: int = 5, looks: Looks | None = None) -> Verdict:
    """``rollback`` if the canary is significantly worse (accuracy or errors) at a planned look,
    ``widen`` if the newest accuracy look found it not worse, else ``wait``.

    ``looks``: what earlier ticks spent (the returned :attr:`Verdict.looks` is the new state).
    """
    done = looks or Looks()
    level = alpha / (2 * max_looks)
    p_err = p_acc = None
    due_err = planned_looks(min(canary.predictions, control.predictions), min_predictions,
                            max_looks)
    if due_err > done.errors:
        done = replace(done, errors=due_err)
        # "more errors" is "a lower share of successes".
        p_err = p_lower(canary.predictions - canary.errors, canary.predictions,
                        control.predictions - control.errors, control.predictions)
        if p_err < level and canary.errors > 0:
            return Verdict("rollback", f"errors rose: {canary.errors}/{canary.predictions} "
                           f"predictions failed on the canary vs {control.errors}/"
                           f"{control.predictions} on the previous model (one-sided p = "
                           f"{p_err:.2g} < {level:.2g}, alpha {alpha:g} over {max_looks} looks; "
                           f"errors look {due_err})", canary, control, None, p_err, done, True)
    due_acc = planned_looks(min(canary.labelled, control.labelled), min_labelled, max_looks)
    ca, co = canary.accuracy or 0.0, control.accuracy or 0.0
    looked = due_err > (looks or Looks()).errors
    if due_acc > done.accuracy:
        looked = True
        p_acc = p_lower(canary.correct, canary.labelled, control.correct, control.labelled)
        done = replace(done, accuracy=due_acc, not_worse=p_acc >= level)
        if p_acc < level:
            return Verdict("rollback", f"the canary is worse: accuracy {ca:.3f} on "
                           f"{canary.labelled} labelled requests vs {co:.3f} on "
                           f"{control.labelled} for the previous model (one-sided p = "
                           f"{p_acc:.2g} < {level:.2g}, alpha {alpha:g} over {max_looks} looks; "
                           f"look {due_acc})", canary, control, p_acc, p_err, done, True)
    if done.not_worse:
        return Verdict("widen", f"the canary is not worse at look {done.accuracy} of "
                       f"{max_looks}: accuracy {ca:.3f} on {canary.labelled} labelled requests "
                       f"vs {co:.3f} on {control.labelled}", canary, control, p_acc, p_err, done,
                       looked)
    nxt = min_labelled * 2 ** done.accuracy
    return Verdict("wait", f"{canary.labelled} labelled requests on the canary and "
                   f"{control.labelled} on the previous model; {min_labelled} each are needed to "
                   f"judge (next look at {nxt} each)", canary, control, p_acc, p_err, done, looked)
