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
    assert margin([0.8], [0.7]) == {"points": 10.0, "ci95": None, "verdict": None, "periods": 1}


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


def test_across_runs_calls_a_lead_that_changes_sign_a_tie() -> None:
    def run(points: float, verdict: str) -> dict[str, object]:
        return {"system_post": 0.75, "margins": {"best_rule": {"points": points,
                                                               "verdict": verdict}}}
    mixed = across_runs([run(1.5, "ahead"), run(-0.5, "tie"), run(0.8, "tie")])
    m = mixed["best_rule"]
    assert (m["mean"], m["min"], m["max"]) == (0.6, -0.5, 1.5)
    assert m["verdict"] == "tie" and m["run_verdicts"] == ["ahead", "tie", "tie"]
    steady = across_runs([run(1.0, "tie"), run(1.1, "tie"), run(0.9, "tie")])["best_rule"]
    assert steady["verdict"] == "ahead"  # small per-run leads, but every seed agrees
    assert across_runs([run(1.0, "tie")])["best_rule"]["verdict"] is None
    assert mixed["runs"] == 3 and mixed["system_post"] == [0.75, 0.75, 0.75]
