"""Drift on the champion's error stream (and optionally on each feature), detected by river's ADWIN.

ADWIN (Bifet and Gavalda, 2007) keeps an adaptive window of recent values and
reports a change when two sub-windows' means differ by more than a bound set
by ``delta``: a smaller ``delta`` means fewer false alarms and later
detections. It comes from river (a maintained library, declared in the
``[train]`` extra) rather than being written here.

The error stream is the scorecard's (:attr:`shadow.loop.scorecard.BatchResult.errors`:
1 = wrong, 0 = right), so a rise in the champion's error rate is a drift. Per
feature, one ADWIN watches each named feature's raw values, so a shift in the
inputs shows even before labels say the champion suffers.

Rows are counted across batches: a signal's ``row`` is the position, in the
whole stream fed to this watch, of the value on which ADWIN fired (ADWIN
checks every ``clock`` values, river's default 32, so it fires on a check).
river resets a detector on the update after it fires, so one watch can fire
again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selection.errors import ConfigError
from selection.validation import Param

__all__ = ["DEFAULT_DELTA", "DELTA", "DriftReport", "DriftSignal", "DriftWatch"]

#: river's default significance for ADWIN.
DEFAULT_DELTA = 0.002
DELTA = Param("delta", float, default=DEFAULT_DELTA, low=0, high=1, low_open=True,
              high_open=True, help="ADWIN's significance: smaller means fewer false alarms")
#: Name of the error stream in signals (features are named by their column).
ERRORS = "errors"


@dataclass(frozen=True)
class DriftSignal:
    """ADWIN fired on one stream: which, at which row, and the window it kept.

    On firing ADWIN drops its oldest values: ``window`` values remain (rows
    ``row - window + 1`` to ``row``), with mean ``window_mean``.
    """

    stream: str
    #: Position in the whole stream fed to the watch.
    row: int
    #: Position in the batch that made it fire.
    batch_row: int
    window: int
    window_mean: float

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "row": self.row, "batch_row": self.batch_row,
                "window": self.window, "window_mean": self.window_mean}


@dataclass(frozen=True)
class DriftReport:
    """What one batch did to the detectors: whether any fired, and where."""

    fired: bool
    signals: tuple[DriftSignal, ...]
    #: Rows fed so far, this batch included.
    rows_seen: int

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "signals": [s.to_dict() for s in self.signals],
                "rows_seen": self.rows_seen}


class DriftWatch:
    """ADWIN on the error stream and, for each name in ``features``, on that feature's values.

    Not thread-safe; one watch per channel champion (a new champion has a new error stream).
    """

    def __init__(self, *, delta: float = DEFAULT_DELTA, features: Sequence[str] = ()) -> None:
        from river.drift import ADWIN  # lazy: river is part of the training stack

        self.delta = DELTA.check(delta, "the drift detector")
        self.features = tuple(features)
        if len(set(self.features)) != len(self.features) or ERRORS in self.features:
            raise ConfigError(f"the drift detector's features must be distinct column names other "
                              f"than {ERRORS!r}; got {list(self.features)}; list each once")
        self._detectors = {name: ADWIN(delta=self.delta) for name in (ERRORS, *self.features)}
        self.rows_seen = 0

    def update(self, errors: np.ndarray, features: np.ndarray | None = None,
               columns: Sequence[str] = ()) -> DriftReport:
        """Feed one batch: its error stream and, when watching features, its feature rows.

        ``features`` ``(rows, len(columns))`` holds the batch's columns in
        ``columns`` order; every watched feature must be among them.
        """
        errors = np.asarray(errors)
        if errors.ndim != 1 or not np.isin(errors, (0, 1)).all():
            raise ConfigError(f"the error stream must be a 1-D array of 0 (right) and 1 (wrong); "
                              f"got shape {errors.shape}; pass BatchResult.errors")
        streams: dict[str, np.ndarray] = {ERRORS: errors.astype(np.float64)}
        if self.features:
            streams.update(self._feature_streams(features, list(columns), errors.size))
        signals = []
        for name, values in streams.items():
            detector = self._detectors[name]
            for i, value in enumerate(values.tolist()):
                detector.update(value)
                if detector.drift_detected:
                    signals.append(DriftSignal(name, self.rows_seen + i, i, int(detector.width),
                                               float(detector.estimation)))
        self.rows_seen += errors.size
        signals.sort(key=lambda s: (s.row, s.stream))
        return DriftReport(bool(signals), tuple(signals), self.rows_seen)

    def _feature_streams(self, features: np.ndarray | None, columns: list[str],
                         n: int) -> dict[str, np.ndarray]:
        missing = [f for f in self.features if f not in columns]
        if features is None or missing:
            raise ConfigError(f"the drift detector watches features {list(self.features)}; the "
                              f"batch lacks {missing if features is not None else 'features'}; "
                              "pass the batch's feature rows and their column names")
        features = np.asarray(features, dtype=np.float64)
        if features.shape != (n, len(columns)) or not np.isfinite(features).all():
            raise ConfigError(f"the batch's features must be finite, shaped ({n}, {len(columns)}) "
                              f"like its error stream and columns; got shape {features.shape}")
        return {name: features[:, columns.index(name)] for name in self.features}
