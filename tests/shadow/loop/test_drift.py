"""ADWIN (river) on error streams and feature streams with known changes, fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from selection.errors import ConfigError
from shadow.loop.drift import DriftWatch

BATCH = 200


def _feed(watch: DriftWatch, errors: np.ndarray, features: np.ndarray | None = None,
          columns: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """Feed the stream in batches; every (stream, row) ADWIN fired at."""
    fired = []
    for start in range(0, errors.size, BATCH):
        part = None if features is None else features[start:start + BATCH]
        report = watch.update(errors[start:start + BATCH], part, columns)
        assert report.fired == bool(report.signals)
        assert report.rows_seen == min(start + BATCH, errors.size)
        fired += [(s.stream, s.row) for s in report.signals]
    return fired


def test_fires_when_the_error_rate_jumps_not_when_it_is_stationary() -> None:
    rng = np.random.default_rng(7)
    jump = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.6]).astype(np.uint8)
    stationary = (rng.random(2000) < 0.2).astype(np.uint8)
    fired = _feed(DriftWatch(), jump)
    assert fired, "ADWIN must fire after the error rate jumps from 0.1 to 0.6 at row 1000"
    assert fired[0][0] == "errors" and 1000 <= fired[0][1] < 1200
    assert _feed(DriftWatch(), stationary) == []


def test_signal_reports_the_row_and_the_window_adwin_kept() -> None:
    rng = np.random.default_rng(7)
    jump = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.6]).astype(np.uint8)
    watch = DriftWatch()
    reports = [watch.update(jump[i:i + BATCH]) for i in range(0, 2000, BATCH)]
    signal = next(s for r in reports for s in r.signals)
    assert signal.row == 1000 + signal.batch_row  # fired in the batch that starts at row 1000
    # ADWIN kept the newest `window` rows; its mean is theirs, computed here by hand.
    kept = jump[signal.row - signal.window + 1:signal.row + 1]
    assert 0 < signal.window < signal.row
    assert signal.window_mean == pytest.approx(kept.mean())
    assert kept.mean() > jump[:1000].mean()  # the newer rows it kept are the worse ones
    assert reports[5].to_dict()["signals"][0]["row"] == signal.row


def test_per_feature_drift_names_the_shifted_feature() -> None:
    rng = np.random.default_rng(11)
    before = rng.normal(0.0, 1.0, size=(1000, 3))
    after = rng.normal(0.0, 1.0, size=(1000, 3))
    after[:, 1] += 3.0  # only "dew" moves
    features = np.concatenate([before, after])
    errors = (rng.random(2000) < 0.2).astype(np.uint8)  # the champion itself is steady
    watch = DriftWatch(features=("temp", "dew"))
    fired = _feed(watch, errors, features, ("temp", "dew", "pressure"))
    assert {stream for stream, _ in fired} == {"dew"}
    assert 1000 <= min(row for _, row in fired) < 1200


@pytest.mark.parametrize("delta", [0, 1, 1.5, -0.1, float("nan"), True, "0.01"])
def test_delta_must_be_in_the_open_unit_interval(delta: object) -> None:
    with pytest.raises(ConfigError, match=r"'delta' must be a float in the range \(0, 1\)"):
        DriftWatch(delta=delta)  # type: ignore[arg-type]


def test_a_smaller_delta_is_passed_to_adwin() -> None:
    assert DriftWatch(delta=1e-5).delta == 1e-5


def test_bad_streams_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="0 \\(right\\) and 1 \\(wrong\\)"):
        DriftWatch().update(np.array([0, 2, 1]))
    watch = DriftWatch(features=("temp",))
    with pytest.raises(ConfigError, match=r"lacks \['temp'\]"):
        watch.update(np.zeros(3, np.uint8), np.zeros((3, 1)), ("dew",))
    with pytest.raises(ConfigError, match="lacks features"):
        watch.update(np.zeros(3, np.uint8))
    with pytest.raises(ConfigError, match="distinct"):
        DriftWatch(features=("temp", "temp"))
