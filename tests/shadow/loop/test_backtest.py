"""`shadow backtest`: the loop's own controller over a drifting stream, in simulated time.

A real stream with a real concept drift (the label rule flips at row 400), real sweeps on the
session's Ray, a real SQLite home: the backtest must append each period as a batch, run one
controller pass per boundary, recover from the drift by promoting, and beat the frozen first
champion after it; its events must satisfy the loop's invariant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from selection.home import Home
from selection.store import Store
from shadow.data.versions import read_ledger
from shadow.loop.journal import check_consistency
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.shadow.conftest import write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SWEEP = """\
[sweep]
name = "bt"
dataset = "{dataset}"
seed = 3

[holdout]
rows = 100

[[slices]]
strategy = "all"

[[slices]]
strategy = "recent"
rows = 100

[[slices]]
strategy = "recent"
rows = 200

[model]
family = "mlp"

[model.params]
width = [16]
epochs = 30

[gate]
require = "no-regression"

[watch]
mode = "propose"
refit = true

[watch.triggers]
new_rows = 100
"""


def drifting_frame(n: int = 1000, flip: int = 400, seed: int = 0) -> pd.DataFrame:
    """label = x0 + x1 > 0 before row ``flip``, x0 - x1 > 0 from it: a real concept drift."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    rule = np.where(np.arange(n) < flip, x[:, 0] + x[:, 1], x[:, 0] - x[:, 1])
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "label": (rule > 0).astype(int)})


def backtest_with(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, n: int,
                  ) -> tuple[dict[str, Any], Path]:
    """``shadow backtest`` of SWEEP plus ``extra`` TOML over a drifting stream of ``n`` rows
    (periods of 100, no online learners or ablations): its JSON summary and its results folder."""
    manifest = write_dataset(tmp_path / "catalog", drifting_frame(n=n), name="flip")
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=manifest) + extra)
    out = tmp_path / "bt"
    outcome = run_cli(capsys, "backtest", str(config), "--period", "100", "--out", str(out),
                      "--no-online", "--no-ablations", "--format", "json")
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout), out


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    manifest = write_dataset(tmp_path / "catalog", drifting_frame(), name="flip")
    with manifest.open("a", encoding="utf-8") as f:
        f.write("\n[drift]\nfrom_row = 400\n")
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=manifest))
    return config


def test_backtest_runs_the_controller_and_recovers_from_drift(
    tmp_path: Path, ray_local: None, stream: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bt"
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "100", "--out", str(out),
                      "--format", "json")
    assert outcome.code == 0, outcome.stderr
    summary = json.loads(outcome.stdout)
    # Boundaries 300..900 (the first where holdout + the 200-row window fit): 7 periods,
    # 6 of them from the drift on; one sweep per period (new_rows = the period).
    assert (summary["periods"], summary["post_periods"], summary["sweeps"]) == (7, 6, 7)
    assert 'mode = "propose" runs as "auto"' in outcome.stderr
    for key in ("system_post", "static_post", "arf_post", "no_change_post", "oracle_post",
                "oracle_refit_post", "retrain_all_post", "retrain_recent_post", "regret",
                "best_rule_post", "margin_vs_best_rule"):
        assert key in summary, key
    assert summary["retrain_recent_post"] == summary["rule_recent-100_post"]  # the middle one
    # The frozen first champion learned the old rule, which agrees with the new one on half
    # the rows; the loop promoted models that learned the new rule once its rows arrived.
    assert summary["static_post"] < 0.65
    assert summary["system_post"] > summary["static_post"] + 0.15
    assert summary["promotions"] >= 2
    # Every margin is paired over the 6 post-drift periods, with its interval and verdict.
    margins = summary["margins"]
    assert set(margins) == {"best_rule", "no_change", "arf", "oracle_refit"}
    for m in margins.values():
        low, high = m["ci95"]
        assert m["periods"] == 6 and low <= m["points"] <= high
        assert m["verdict"] == ("ahead" if low > 0 else "behind" if high < 0 else "tie")
    # The mean of the differences and the difference of the (rounded) means agree to rounding.
    assert margins["best_rule"]["points"] == pytest.approx(summary["margin_vs_best_rule"],
                                                           abs=0.011)
    record = json.loads((out / "backtest.json").read_text())
    assert [p["start"] for p in record["periods"]] == list(range(300, 1000, 100))
    assert (out / "backtest.md").read_text().startswith("# Backtest on `flip`")
    assert (out / "backtest.png").stat().st_size > 10_000
    # The home is a real one: 6 batches appended (one per later boundary), events consistent.
    home = Home(out / "home")
    assert [v.rows for v in read_ledger(home, "flip-backtest")] == list(range(400, 1000, 100))
    with Store.open(home) as store:
        assert check_consistency(store, "production") == []
        kinds = [e.kind for e in store.list_events(channel="production")]
        assert kinds.count("sweep_finished") == 7 and kinds.count("promotion") >= 2
        seeds = {e.evidence["seed"] for e in store.list_events(channel="production",
                                                                 kinds="sweep_started")}
        assert seeds == set(range(3, 10))  # each sweep its own seed


def test_backtest_refuses_a_used_out_folder_and_bad_flags(
    tmp_path: Path, stream: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "bt" / "home"
    (home / "channels").mkdir(parents=True)
    before = snapshot(tmp_path / "bt")
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "100", "--out",
                      str(tmp_path / "bt"))
    assert_user_error(outcome, "already holds a backtest's home")
    assert snapshot(tmp_path / "bt") == before
    outcome = run_cli(capsys, "backtest", str(stream), "--dataset", "noaa-weather",
                      "--period", "100")
    assert_user_error(outcome, "not both")
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "600", "--out",
                      str(tmp_path / "b2"))
    assert_user_error(outcome, "lower --period")
    assert not (tmp_path / "b2").exists()
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "0")
    assert_user_error(outcome, "--period", "0")
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "100", "--seeds", "4", "4",
                      "--out", str(tmp_path / "b3"))
    assert_user_error(outcome, "--seeds needs at least two different seeds")
    assert not (tmp_path / "b3").exists()
    # A used seed folder is refused before the first run, not after it.
    (tmp_path / "b4" / "seed-1" / "home" / "channels").mkdir(parents=True)
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "100", "--seeds", "0", "1",
                      "--out", str(tmp_path / "b4"))
    assert_user_error(outcome, "seed-1 already holds a backtest's home")
    assert not (tmp_path / "b4" / "seed-0").exists()
    (tmp_path / "b5").mkdir()
    (tmp_path / "b5" / "seeds.json").write_text("{}")
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "100", "--seeds", "0", "1",
                      "--out", str(tmp_path / "b5"))
    assert_user_error(outcome, "already holds a judgement over seeds")
    assert sorted(p.name for p in (tmp_path / "b5").iterdir()) == ["seeds.json"]


def test_backtest_over_seeds_judges_each_margin_over_the_runs(
    tmp_path: Path, ray_local: None, stream: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bts"
    outcome = run_cli(capsys, "backtest", str(stream), "--period", "100", "--periods", "2",
                      "--start", "700", "--no-online", "--no-ablations", "--seeds", "5", "6",
                      "--out", str(out), "--format", "json")
    assert outcome.code == 0, outcome.stderr
    record = json.loads(outcome.stdout)
    assert record["seeds"] == [5, 6] and len(record["runs"]) == 2
    assert json.loads((out / "seeds.json").read_text()) == record
    across = record["across_seeds"]
    for peer in ("best_rule", "oracle_refit"):
        m = across[peer]
        assert m["points"] == [r["margins"][peer]["points"] for r in record["runs"]]
        assert m["min"] <= m["mean"] <= m["max"]
        (low, high), (plow, phigh) = m["ci95"], m["pooled_ci95"]
        both = ("ahead" if low > 0 and plow > 0 else "behind" if high < 0 and phigh < 0
                else "tie")
        assert m["verdict"] == both
    assert "arf" not in across and "no_change" not in across  # --no-online: not scored
    assert (out / "seeds.md").read_text().startswith("# Backtest on `flip` over seeds 5, 6")
    # Each seed ran its own backtest, with the sweep file's [sweep] seed replaced by it.
    for seed in (5, 6):
        with Store.open(Home(out / f"seed-{seed}" / "home")) as store:
            started = store.list_events(channel="production", kinds="sweep_started")
            assert {e.evidence["seed"] for e in started} == {seed, seed + 1}
        run = json.loads((out / f"seed-{seed}" / "backtest.json").read_text())
        assert run["summary"]["seed"] == seed
        # The command recorded with each run reproduces it: its seed and its own folder.
        assert f"--seed {seed} " in run["command"]
        assert f"--out {out / f'seed-{seed}'} " in run["command"]
