"""A tiny drift replay through the product's backtest: the controller, Ray, the gate, refits.

Two boundaries of NOAA weather with the replay's preset (one trial per slice): enough to check
that the backtest drives the product's real paths (every promotion is a history row carrying a
passed gate decision, and production ships refits of the gated candidate) and that every score
is on rows no sweep of that boundary could see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from selection.channels.promotion import history
from selection.gate.record import GateDecision
from selection.store import Store
from shadow.loop.backtest import (
    BacktestSettings,
    markdown,
    plot,
    replay_config,
    run_backtest,
    summarize,
)
from shadow.loop.backtest.report import APPROACHES, accuracies
from shadow.sweep.config import config_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_replay_promotes_through_the_gate_and_scores_unseen_periods(
    tmp_path: Path, ray_local: None,
) -> None:
    home = tmp_path / "home"
    lines: list[str] = []
    config = config_from_dict(replay_config("noaa-weather", 365, trials=1, epochs=2,
                                            windows=(1, 2), expanding_gap=2))
    settings = BacktestSettings(period=365, periods=2, recent_rows=365)
    result = run_backtest(config, settings, home, tmp_path / "data", on_progress=lines.append)

    assert result.boundaries == [1095, 1460]
    with Store.open(home, create=False) as store:
        promotions = [h for h in history(store, channel="production") if h.action == "promote"]
        gate_only = [h for h in history(store, channel="production-gate-only")
                     if h.action == "promote"]
        strict_refit = [h for h in history(store, channel="production-refit-improvement")
                        if h.action == "promote"]
        for period in result.periods:
            sweep = store.get_sweep(period.step.sweep_id)
            # The sweep saw rows [0, boundary) only, its holdout being the last period of them...
            assert sweep.holdout.stop == period.start and sweep.holdout.start == period.start - 365
            # ...and is scored on the next period.
            assert (period.start, period.stop) == (period.step.boundary, period.step.boundary + 365)
            # Every slice's best candidate was refit on its slice plus that holdout, no more.
            assert period.step.refits and not period.step.refit_errors
            for parent_id, refit_id in period.step.refits.items():
                refit = store.get_candidate(refit_id)
                assert refit.refit_of == parent_id and refit.refit["holdout"] == [sweep.holdout.start,
                                                                                sweep.holdout.stop]
        shipped = [store.get_candidate(h.candidate_id) for h in promotions]
    assert len(promotions) == sum(p.step.promoted for p in result.periods) >= 1
    assert len(gate_only) == sum(p.step.ablations["production-gate-only"] for p in result.periods) >= 1
    assert len(strict_refit) == sum(p.step.ablations["production-refit-improvement"] for p in result.periods) >= 1
    for record, model in zip(promotions, shipped):
        decision = GateDecision.from_json(record.decision)
        assert decision.passed is True and decision.checks
        # Production ships the refit of the candidate the gate judged.
        assert decision.refit is not None
        assert model.refit_of == decision.refit["of"] == decision.challenger.candidate_id
    gated = [GateDecision.from_json(row.decision) for row in gate_only]
    strict = [GateDecision.from_json(row.decision) for row in strict_refit]
    assert all(d.refit is None for d in gated)
    assert all(d.refit is not None and d.refit["of"] for d in strict)
    assert all(d.gate_policy["require"] == "improvement" for d in gated + strict)
    assert all(GateDecision.from_json(row.decision).gate_policy["require"] == "no-regression"
               for row in promotions)
    first = result.periods[0]
    assert first.step.promoted and first.serving_id == first.step.refits[first.step.challenger_id]
    # The first champion is the static model, so they agree on the first period.
    assert first.accuracy["system"] == first.accuracy["static"]
    for period in result.periods:
        acc = accuracies(result, period)
        assert set(APPROACHES) <= set(acc)
        assert all(0.0 <= v <= 1.0 for v in acc.values())
        # Every retraining rule deploys a refit of one slice's best: the refit oracle bounds them.
        rules = [v for k, v in acc.items() if k.startswith("rule:")]
        assert acc["oracle_refit"] >= max(rules + [acc["always_promote"]])

    summary = summarize(result)
    assert summary["promotions"] == len(promotions) and summary["periods"] == 2
    assert summary["post_periods"] == 0  # NOAA's drift is at row 12,000: nothing post-drift here
    assert summary["system_post"] is None
    assert "| 1095-1459 |" in markdown(result, summary, "test")
    plot(result, tmp_path / "replay.png")
    assert (tmp_path / "replay.png").stat().st_size > 10_000
    assert any("river arf" in line for line in lines)
