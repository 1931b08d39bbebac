"""The peers that need no shadow fleet: river's online learners and two naive baselines.

Each returns one boolean per row ("was this row predicted right?") over rows ``[0, stop)``, so
the backtest averages them over exactly the periods it scores the system on. The online
learners are prequential (test, then train on the row): they use every label as soon as it
arrives, which a fleet retrained once a period cannot; the no-change baseline (the previous
row's label) shows how much that alone is worth on a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _arf(seed: int) -> Any:
    from river import forest

    return forest.ARFClassifier(seed=seed)


def _hoeffding(seed: int) -> Any:
    del seed  # a Hoeffding tree has no randomness
    from river import tree

    return tree.HoeffdingTreeClassifier()


#: river learners by the name the report uses; built lazily (river loads in about a second).
ONLINE_LEARNERS: dict[str, Callable[[int], Any]] = {"arf": _arf, "hoeffding": _hoeffding}


def prequential(model: Any, features: np.ndarray, labels: np.ndarray,
                names: Sequence[str]) -> np.ndarray:
    """Test-then-train over the rows in order: predict row i, then learn it.

    A row the learner cannot predict yet (river returns None before its first example) counts
    as wrong.
    """
    correct = np.zeros(len(labels), dtype=bool)
    for i, (row, label) in enumerate(zip(features.tolist(), labels.tolist())):
        x = dict(zip(names, row))
        correct[i] = model.predict_one(x) == label
        model.learn_one(x, label)
    return correct


def no_change(labels: np.ndarray) -> np.ndarray:
    """Predict each row's label as the previous row's (known by then); row 0 counts as wrong."""
    correct = np.zeros(len(labels), dtype=bool)
    correct[1:] = labels[1:] == labels[:-1]
    return correct


def majority(labels: np.ndarray, boundaries: Sequence[int], period: int) -> np.ndarray:
    """Predict every row of a period as the most frequent label of all rows before it.

    Rows outside the scored periods stay False: they are never averaged.
    """
    correct = np.zeros(len(labels), dtype=bool)
    for start in boundaries:
        values, counts = np.unique(labels[:start], return_counts=True)
        guess = values[np.argmax(counts)]
        correct[start:start + period] = labels[start:start + period] == guess
    return correct
