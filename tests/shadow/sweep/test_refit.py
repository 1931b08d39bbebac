"""Refit for real: a gated candidate retrained on its slice plus the holdout, then shipped.

Checks the rows a refit trains on, that it is never ranked, that it ships only on
its parent's gate decision, and that a refit champion is never judged on rows it
trained on (which would make it unbeatable).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selection.artifacts.arrays import decode_holdout
from selection.channels.promotion import history
from selection.gate.decision import evaluate_gate
from selection.gate.record import GateDecision
from selection.gate.rescore import predict_classes
from selection.leaderboard.frame import leaderboard
from selection.report import build_report
from selection.store import Store
from shadow.cli.main import main
from shadow.errors import RefitError
from shadow.sweep import config_from_dict, prepare_sweep
from shadow.sweep.prepare import check_resumable
from shadow.sweep.refit import allowed_drop, finish_refit, plan_refit, refit_candidate, refit_rows
from shadow.sweep.task import run_candidate
from tests.shadow.cli.test_cli_errors import assert_user_error, snapshot
from tests.shadow.conftest import separable_frame, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


def private_home(swept, tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of the shared sweep's home (tests here promote); its sweep id and rank 1."""
    source, info = swept
    home = tmp_path / "home"
    shutil.copytree(source, home, symlinks=True)
    with Store.open(home, create=False) as store:
        best = leaderboard(store, sweep=info["sweep_id"]).sort_values("rank")["candidate_id"].iloc[0]
    return home, info["sweep_id"], str(best)


def shadow(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=180)


def test_refit_trains_on_slice_plus_holdout_and_is_never_ranked(swept, tmp_path):
    home, sweep_id, best = private_home(swept, tmp_path)
    with Store.open(home, create=False) as store:
        board_before = leaderboard(store, sweep=sweep_id)
        parent = store.get_candidate(best)
        refit = refit_candidate(store, best)
        again = refit_candidate(store, best)
        board_after = leaderboard(store, sweep=sweep_id)
        sweep = store.get_sweep(sweep_id)
        features, labels = decode_holdout(store.artifacts.read_verified(sweep.holdout.data_sha256))
        model = store.artifacts.read_verified(refit.onnx_sha256)
        n_stored = len(store.list_candidates(sweep_id))
        # A resumed sweep sees only the candidates it planned, never the refit.
        resumable = check_resumable(prepare_sweep(config_from_dict(sweep.config), sweep_id), store)
    slice_rows = parent.lineage["slice_rows"]
    info = refit.refit
    assert refit.refit_of == best and refit.slice_id == parent.slice_id + "+holdout"
    # The parent's slice (all of it: no validation split) plus every one of the 365 holdout rows.
    assert info["rows"] == refit.lineage["train_rows"] == slice_rows + 365
    assert info["holdout_rows_added"] == 365 and info["holdout"] == [sweep.holdout.start, sweep.holdout.stop]
    assert info["holdout_data_sha256"] == sweep.holdout.data_sha256
    assert (refit.family, refit.params, refit.seed) == (parent.family, parent.params, parent.seed)
    # Asking again returns the stored refit: deterministic id, nothing trained or stored twice.
    assert again.candidate_id == refit.candidate_id and n_stored == len(board_before) + 1
    # Stored as a refit (candidates.refit_of), in its parent's sweep, which records its devices as data.
    assert (again.refit_of, again.sweep_id, again.refit) == (best, sweep_id, info)
    assert sweep.devices == tuple(sweep.config["sweep"].get("devices", ["host-cpu"]))
    assert len(resumable) == len(board_before) and refit.candidate_id not in {r.candidate_id for r in resumable}
    # Never ranked: the sweep's leaderboard is exactly what it was.
    pd.testing.assert_frame_equal(board_before, board_after)
    # It really saw the holdout: its in-sample score there is what its own model predicts.
    result = refit.device("host-cpu")
    predicted = predict_classes(model, features, refit.lineage["model_io"])
    assert result.accuracy == pytest.approx(float(np.mean(predicted == labels)))
    check = info["checks"]["host-cpu"]
    assert check["in_sample_accuracy"] == result.accuracy
    assert check["parent_accuracy"] == parent.device("host-cpu").accuracy
    assert info["max_drop"] is None  # scaled to the holdout (allowed_drop)
    assert check["allowed_drop"] == pytest.approx(allowed_drop(check["parent_accuracy"], len(labels)), abs=1e-6)
    assert result.accuracy >= check["parent_accuracy"] - check["allowed_drop"]
    assert result.extra["accuracy_in_sample"] is True


def test_promote_refit_ships_the_refit_on_its_parents_decision(swept, tmp_path):
    home, sweep_id, best = private_home(swept, tmp_path)
    done = shadow("promote", best, "--refit", "--force", "--reason", "test refit", "--home", str(home),
                  "--format", "json")
    assert done.returncode == 0, done.stderr
    shipped = json.loads(done.stdout)
    assert shipped["refit_of"] == best and shipped["candidate_id"] != best
    manifest = json.loads((home / "channels" / "production" / "manifest.json").read_text())
    assert manifest["candidate_id"] == shipped["candidate_id"] and manifest["refit_of"] == best
    with Store.open(home, create=False) as store:
        row = history(store)[0]
        assert row.candidate_id == shipped["candidate_id"]
        stored = GateDecision.from_json(row.decision)
        assert stored.challenger.candidate_id == best  # the gate judged the parent
        assert stored.refit is not None and stored.refit["of"] == best and stored.refit["rows"] > 365
        # Its parent is already in production through the refit: nothing to promote.
        again = evaluate_gate(store, best)
        assert "as its refit" in " ".join(again.reasons)
        # The report marks the parent, the refit's row on the board.
        page = build_report(store, sweep=sweep_id)
        assert f"(refit of {best}, marked)" in page
        assert f'<tr class="champion" data-candidate="{best}">' in page
        # Any other candidate of this sweep would be judged on rows the champion trained on.
        other = leaderboard(store, sweep=sweep_id).sort_values("rank")["candidate_id"].iloc[1]
        decision = evaluate_gate(store, other)
        assert not decision.passed
        assert "trained on 365 of these 365 holdout rows" in " ".join(decision.reasons)
    # The refit itself can never be gated: its holdout scores are in-sample.
    direct = shadow("promote", shipped["candidate_id"], "--home", str(home))
    assert direct.returncode == 2 and len(direct.stderr.strip().splitlines()) == 1
    assert "is a refit of" in direct.stderr and "Traceback" not in direct.stderr


def test_a_refit_champion_is_not_judged_on_an_overlapping_holdout(swept, tmp_path, capsys):
    """A later sweep whose holdout repeats rows the champion was refit on cannot gate against it."""
    home, sweep_id, best = private_home(swept, tmp_path)
    wider = tmp_path / "wider.toml"
    wider.write_text(swept[1]["config"].read_text().replace("rows = 365", "rows = 500", 1))
    with Store.open(home, create=False) as store:
        from selection.gate.decision import promote_through_gate

        promote_through_gate(store, best, force=True, reason="t",
                             refit=lambda cid: refit_candidate(store, cid).candidate_id)
    assert main(["sweep", "run", str(wider), "--home", str(home), "--format", "json", "--quiet"]) == 0
    capsys.readouterr()
    with Store.open(home, create=False) as store:
        newest = store.latest_sweep_id()
        assert newest != sweep_id
        challenger = leaderboard(store, sweep=newest).sort_values("rank")["candidate_id"].iloc[0]
        decision = evaluate_gate(store, challenger)
    # The new holdout's last 365 rows are the ones the champion absorbed (matched by content).
    assert "trained on 365 of these 500 holdout rows" in " ".join(decision.reasons)


def test_refit_checks_refuse_and_store_nothing(swept, tmp_path):
    home, sweep_id, best = private_home(swept, tmp_path)
    with Store.open(home, create=False) as store:
        plan = plan_refit(store, best)
        outcome = run_candidate(plan.spec, plan.data)
        # A refit that scores far below its parent on rows it trained on has gone wrong.
        broken = replace(outcome, record=replace(outcome.record, devices=tuple(
            replace(d, accuracy=0.1) for d in outcome.record.devices)))
        with pytest.raises(RefitError, match="below its parent's .*allowed: 0.05"):
            finish_refit(store, plan, broken)
        failed = replace(outcome, record=replace(outcome.record, status="failed", error="boom"))
        with pytest.raises(RefitError, match="failed: boom"):
            finish_refit(store, plan, failed)
        assert len(store.list_candidates(sweep_id)) == len(leaderboard(store, sweep=sweep_id))
        refit = finish_refit(store, plan, outcome)
        with pytest.raises(RefitError, match="already a refit"):
            refit_candidate(store, refit.candidate_id)


def test_refit_refuses_a_dataset_that_changed(tmp_path, ray_local, monkeypatch, capsys):
    catalog = tmp_path / "catalog"
    path = write_dataset(catalog, separable_frame(n=300), name="drifty")
    monkeypatch.setenv("SHADOW_CATALOG", str(catalog))
    config = tmp_path / "s.toml"
    config.write_text('[sweep]\ndataset = "drifty"\n[holdout]\nrows = 60\n[[slices]]\nstrategy = "all"\n'
                      '[model]\nfamily = "mlp"\n[model.params]\nwidth = 4\nepochs = 2\n')
    home = tmp_path / "home"
    assert main(["sweep", "run", str(config), "--home", str(home), "--quiet", "--format", "json"]) == 0
    capsys.readouterr()
    separable_frame(n=300, seed=1).to_csv(path.parent / "data.csv", index=False)
    # Through the CLI: the gate passes (no champion yet), the refit refuses: one line, exit 2,
    # and the store and files are exactly as they were (no history row, no channel).
    before = snapshot(home)
    refused = shadow("promote", "--best", "--refit", "--home", str(home))
    assert_user_error(refused, "changed since the sweep", "run a new sweep")
    assert snapshot(home) == before and not (home / "channels" / "production").exists()
    with Store.open(home, create=False) as store:
        (only,) = store.list_candidates()
        with pytest.raises(RefitError, match="changed since the sweep"):
            refit_candidate(store, only.candidate_id)
        assert len(store.list_candidates()) == 1


def test_refit_rows_of_a_segment_take_only_that_segments_holdout_rows(tmp_path, monkeypatch):
    frame = separable_frame(n=200)
    frame["region"] = np.where(np.arange(200) % 2 == 0, "east", "west")
    catalog = tmp_path / "catalog"
    path = write_dataset(catalog, frame, name="regions", features=["x0", "x1"])
    path.write_text(path.read_text().replace('features', 'segment_columns = ["region"]\nfeatures', 1))
    monkeypatch.setenv("SHADOW_CATALOG", str(catalog))
    prepared = prepare_sweep(config_from_dict({
        "sweep": {"name": "t", "dataset": "regions"}, "holdout": {"rows": 40},
        "slices": [{"strategy": "segment", "column": "region"}, {"strategy": "recent", "rows": 50}],
        "model": {"family": "mlp", "params": {}},
    }))
    east, added = refit_rows(prepared, "segment-region=east")
    assert added == 20 and set(east) == set(range(0, 200, 2))
    recent, added = refit_rows(prepared, "recent-50")
    assert added == 40 and recent.tolist() == list(range(110, 200))
    with pytest.raises(RefitError, match="not one the sweep's config cuts"):
        refit_rows(prepared, "recent-7")
