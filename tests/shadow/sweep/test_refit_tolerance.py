"""How far below its parent a refit may score on the holdout rows it trained on: scaled to the holdout."""

from __future__ import annotations

import pytest

from selection.records import CandidateRecord, DeviceResult
from shadow.errors import RefitError
from shadow.sweep.refit import MIN_DROP, _check, allowed_drop


def _model(cid: str, accuracy: float) -> CandidateRecord:
    return CandidateRecord(candidate_id=cid, sweep_id="s", slice_id="all", family="mlp", params={},
                           seed=0, status="ok",
                           devices=(DeviceResult(device="host-cpu", status="ok", accuracy=accuracy),))


def test_the_allowed_drop_is_two_and_a_half_standard_errors_and_at_least_the_old_floor() -> None:
    # 63 rows at 0.635: one standard error is 6.1 points, so 0.05 was under one.
    assert allowed_drop(0.635, 63) == pytest.approx(2.5 * (0.635 * 0.365 / 63) ** 0.5)
    assert allowed_drop(0.635, 63) > 0.15
    # 365 rows at 0.77: 2.5 standard errors is 5.5 points, near the fixed 0.05 it replaces.
    assert 0.05 < allowed_drop(0.77, 365) < 0.056
    # Thousands of rows, or a perfect parent: the floor.
    assert allowed_drop(0.8, 10_000) == allowed_drop(1.0, 63) == MIN_DROP == allowed_drop(0.6, 0)


def test_a_refit_on_a_short_holdout_may_land_lower_but_a_broken_one_is_still_refused() -> None:
    parent = _model("c-parent", 0.635)
    # The S&P 500 case: a sound, early-stopped refit 6.3 points under a lucky parent on 63 rows.
    checks = _check(parent, _model("c-refit", 0.571), None, holdout_rows=63)
    assert checks["host-cpu"]["allowed_drop"] == pytest.approx(allowed_drop(0.635, 63), abs=1e-6)
    # The same drop on 365 rows is more than chance explains.
    with pytest.raises(RefitError, match=r"0\.0640 below its parent's 0\.6350 .*allowed: 0\.0"):
        _check(parent, _model("c-refit", 0.571), None, holdout_rows=365)
    # A diverged refit (coin toss) is refused on any holdout.
    with pytest.raises(RefitError, match="did not train properly"):
        _check(parent, _model("c-refit", 0.40), None, holdout_rows=63)
    # An explicit max_drop is used as given.
    with pytest.raises(RefitError, match="allowed: 0.05"):
        _check(parent, _model("c-refit", 0.571), 0.05, holdout_rows=63)
