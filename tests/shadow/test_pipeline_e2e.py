"""The whole pipeline for real: NOAA data -> Ray sweep -> store -> promote -> rollback.

Checks the contract an edge app relies on: the production file loads in ONNX
Runtime and scores exactly what the leaderboard says on the sweep's holdout.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from selection.artifacts.arrays import decode_array, decode_holdout
from selection.artifacts.content import sha256_bytes
from selection.gate.record import GateDecision
from selection.leaderboard.frame import leaderboard
from selection.store import Store
from shadow.cli.main import main
from shadow.data.catalog import find_manifest
from shadow.data.loader import load_dataset
from tests.shadow.conftest import separable_frame, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_stores_every_candidate_with_lineage(swept):
    home, info = swept
    with Store.open(home, create=False) as store:
        board = leaderboard(store, sweep="latest")
        sweep = store.get_sweep(info["sweep_id"])
        slices = store.get_slices(info["sweep_id"])
        some = store.get_candidate(board["candidate_id"].iloc[0])
    assert sweep.status == "finished" and sweep.n_planned == 6
    assert sweep.holdout.stop - sweep.holdout.start == 365
    assert sorted(s.slice_id for s in slices) == ["recent-730", "window-1000@12794", "window-1000@16794"]
    assert len(board) == 6 and set(board["status"]) == {"ok"}
    assert sorted(board["rank"].tolist()) == [1, 2, 3, 4, 5, 6]
    assert board["accuracy"].between(0.5, 1.0).all()
    assert (board["latency_ms"] > 0).all() and (board["size_bytes"] > 0).all()
    assert some.lineage["dataset_fingerprint"] == load_dataset(find_manifest("noaa-weather")).fingerprint
    assert some.lineage["versions"]["torch"].startswith("2.")
    assert some.lineage["model_io"]["features"][0] == "temperature"


def test_holdout_and_per_row_predictions_are_stored_for_paired_tests(swept):
    home, info = swept
    with Store.open(home, create=False) as store:
        sweep = store.get_sweep(info["sweep_id"])
        features, labels = decode_holdout(store.artifacts.read_verified(sweep.holdout.data_sha256))
        board = leaderboard(store, sweep=info["sweep_id"])
        results = [store.get_candidate(cid).device("host-cpu") for cid in board["candidate_id"]]
        predictions = [decode_array(store.artifacts.read_verified(r.predictions_sha256)) for r in results]
    dataset = load_dataset(find_manifest("noaa-weather"))
    assert np.array_equal(features, dataset.features[-365:]) and np.array_equal(labels, dataset.labels[-365:])
    for result, predicted in zip(results, predictions):
        assert predicted.shape == (365,) and predicted.dtype == np.int64
        assert np.isclose((predicted == labels).mean(), result.accuracy)


def test_promote_best_then_rollback(swept, capsys, tmp_path):
    # A private copy: the shared sweep's home stays without a champion for other tests.
    source, info = swept
    home = tmp_path / "home"
    shutil.copytree(source, home, symlinks=True)
    code, out, err = run_cli(capsys, "leaderboard", "--home", str(home), "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    best = min(rows, key=lambda r: r["rank"])
    second = next(r for r in rows if r["rank"] == 2)

    code, out, err = run_cli(capsys, "promote", "--best", "--home", str(home), "--format", "json")
    assert code == 0, err
    promoted = json.loads(out)
    assert promoted["candidate_id"] == best["candidate_id"]

    # The production file is what an edge app loads: it must score what the board says.
    model_path = home / "channels" / "production" / "model.onnx"
    data = model_path.read_bytes()
    assert sha256_bytes(data) == promoted["sha256"] == best["artifact_sha256"]
    dataset = load_dataset(find_manifest("noaa-weather"))
    x, y = dataset.features[-365:], dataset.labels[-365:]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.isclose((probabilities.argmax(axis=1) == y).mean(), best["accuracy"])
    manifest = json.loads((home / "channels" / "production" / "manifest.json").read_text())
    assert manifest["candidate_id"] == best["candidate_id"] and manifest["sha256"] == promoted["sha256"]

    # Rank 2 is worse than the champion, so the gate refuses it unless forced.
    code, out, err = run_cli(capsys, "promote", second["candidate_id"], "--home", str(home))
    assert code == 2 and "gate refused" in err
    assert sha256_bytes(model_path.read_bytes()) == best["artifact_sha256"]
    code, out, err = run_cli(capsys, "promote", second["candidate_id"], "--home", str(home),
                             "--force", "--reason", "second opinion")
    assert code == 0, err
    assert sha256_bytes(model_path.read_bytes()) == second["artifact_sha256"]

    code, out, err = run_cli(capsys, "rollback", "--home", str(home), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["candidate_id"] == best["candidate_id"]
    assert sha256_bytes(model_path.read_bytes()) == best["artifact_sha256"]

    code, out, err = run_cli(capsys, "history", "--home", str(home), "--format", "json")
    history = json.loads(out)
    assert [h["action"] for h in history] == ["rollback", "promote", "promote"]
    assert history[1]["reason"] == "second opinion"
    assert history[0]["candidate_id"] == best["candidate_id"]


def test_a_failing_candidate_is_a_row_and_the_sweep_goes_on(tmp_path, ray_local, capsys):
    # Finite but extreme values in the oldest rows overflow float32 statistics,
    # so training on any slice holding them diverges: a real failure, stored as data.
    frame = separable_frame(n=400)
    frame.loc[:49, "x0"] = 3e38
    write_dataset(tmp_path / "catalog", frame, name="extreme")
    config = tmp_path / "extreme.toml"
    config.write_text(
        '[sweep]\ndataset = "catalog/extreme/dataset.toml"\n[holdout]\nrows = 100\n'
        '[[slices]]\nstrategy = "all"\n[[slices]]\nstrategy = "window"\nsize = 100\nstride = 100\n'
        '[model]\nfamily = "mlp"\n[model.params]\nwidth = 4\nepochs = 2\n'
    )
    home = tmp_path / "home"
    code, out, err = run_cli(capsys, "sweep", "run", str(config), "--home", str(home),
                             "--format", "json", "--quiet")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["planned"], summary["ok"], summary["failed"]) == (4, 2, 2)
    with Store.open(home, create=False) as store:
        board = leaderboard(store)
    failed = board[board["status"] == "failed"].sort_values("slice_id")
    assert failed["slice_id"].tolist() == ["all", "window-100@0"]
    assert failed["rank"].isna().all()
    assert failed["error"].str.contains("training diverged").all()
    assert board[board["status"] == "ok"]["rank"].tolist() == [1, 2]


def test_promote_through_gate_is_the_library_path(swept, tmp_path):
    from selection import GateRefused, history, promote_through_gate

    source, info = swept
    home = tmp_path / "home"
    shutil.copytree(source, home, symlinks=True)
    with Store.open(home, create=False) as store:
        board = leaderboard(store, sweep=info["sweep_id"])
        worst = board.sort_values("rank")["candidate_id"].iloc[-1]
        champion = promote_through_gate(store, board.sort_values("rank")["candidate_id"].iloc[0], reason="t") \
            if not history(store) else history(store)[0]
        with pytest.raises(GateRefused, match="the gate refused") as refused:
            promote_through_gate(store, worst)
        assert refused.value.decision.passed is False and refused.value.decision.reasons
        assert history(store)[0].history_id == champion.history_id  # nothing changed
        forced = promote_through_gate(store, worst, force=True, reason="incident drill")
        assert forced.candidate_id == worst
        stored = GateDecision.from_json(forced.decision)
        assert stored.forced is True and stored.passed is False
