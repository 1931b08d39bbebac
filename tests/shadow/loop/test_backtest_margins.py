"""The backtest's margins: paired per period, a t interval, a verdict that calls noise a tie."""

from __future__ import annotations

import pytest

from shadow.loop.backtest.margins import across_runs, margin, run_margins


def test_margin_is_paired_with_a_t_interval_and_a_verdict() -> None:
    # Differences of +1, +2, +3 points: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 +/- 2.48.
    m = margin([0.71, 0.72, 0.73], [0.70, 0.70, 0.70])
    assert m["points"] == pytest.approx(2.0)
    assert m["ci95"] == pytest.approx([2 - 2.48, 2 + 2.48], abs=0.01)
    assert (m["verdict"], m["periods"]) == ("tie", 3)  # a 2-point lead inside the noise
    steady = margin([0.72, 0.72, 0.73, 0.72], [0.70, 0.70, 0.71, 0.70])
    assert steady["verdict"] == "ahead" and steady["ci95"][0] > 0
    assert margin([0.60, 0.61], [0.70, 0.70])["verdict"] == "behind"
    # One period cannot say how noisy it is: no interval, no verdict.
    assert margin([0.8], [0.7]) == {"points": 10.0, "ci95": None, "verdict": None, "periods": 1,
                                    "diffs": [10.0]}


def test_run_margins_pairs_only_the_periods_both_were_scored_on() -> None:
    periods = [{"system": 0.8, "rule:recent-3": 0.7, "no_change": 0.6, "oracle_refit": 0.85},
               {"system": 0.8, "rule:recent-3": 0.7, "no_change": 0.6, "oracle_refit": 0.82},
               {"rule:recent-3": 0.1, "no_change": 0.1}]  # not served by the system
    margins = run_margins(periods, "recent-3")
    assert set(margins) == {"best_rule", "no_change", "oracle_refit"}  # no arf was scored
    assert margins["best_rule"]["points"] == pytest.approx(10.0)
    assert margins["best_rule"]["periods"] == 2
    assert margins["oracle_refit"]["points"] == pytest.approx(-3.5)
    assert run_margins(periods, None).keys() == {"no_change", "oracle_refit"}


def _run(diffs: list[float]) -> dict[str, object]:
    """A run's summary as across_runs reads it: its best-rule margin from per-period diffs."""
    system = [0.7 + d / 100 for d in diffs]
    return {"system_post": 0.75, "margins": {"best_rule": margin(system, [0.7] * len(diffs))}}


def test_across_runs_calls_a_lead_that_changes_sign_a_tie() -> None:
    mixed = across_runs([_run([1.0, 2.0, 1.5]), _run([-0.5, -1.0, 0.0]), _run([0.8, 0.9, 0.7])])
    m = mixed["best_rule"]
    assert (m["mean"], m["min"], m["max"]) == (0.6, -0.5, 1.5)
    assert m["verdict"] == "tie" and m["run_verdicts"] == ["ahead", "tie", "ahead"]
    assert mixed["runs"] == 3 and mixed["system_post"] == [0.75, 0.75, 0.75]


def test_across_runs_needs_the_periods_noise_cleared_too() -> None:
    # Every seed agrees on about +1 point, but period by period the margin swings +-6 points:
    # the seeds score the same periods, so their agreement is no evidence about the next one.
    noisy = across_runs([_run([7.0, -5.0, 1.0]), _run([7.1, -4.9, 1.1]), _run([6.9, -5.1, 0.9])])
    m = noisy["best_rule"]
    assert m["ci95"][0] > 0  # over seeds alone it would read as a lead
    assert m["pooled_ci95"][0] < 0 < m["pooled_ci95"][1]
    assert m["verdict"] == "tie"
    steady = across_runs([_run([1.0, 1.2, 0.9, 1.1]), _run([1.1, 1.0, 1.0, 1.2]),
                          _run([0.9, 1.1, 1.0, 1.0])])["best_rule"]
    assert steady["verdict"] == "ahead"  # small, but above zero in every period and every seed
    assert across_runs([_run([1.0, 2.0])])["best_rule"]["verdict"] is None
    # Runs over different periods: no pooled interval; the seeds' interval must agree with
    # every run's own verdict.
    apart = across_runs([_run([1.0, 1.1, 0.9]), _run([1.0, 1.2]), _run([1.1, -3.0, 5.0])])
    assert apart["best_rule"]["pooled_ci95"] is None
    assert apart["best_rule"]["verdict"] == "tie"
