"""The ensemble candidate for real: a sweep with [ensemble] stores its top members as one model.

A real sweep on Ray (the session's two-node cluster) with real training, export and the
host-cpu device; the ensemble is ranked, refit (members refit, then combined again) and
promoted like any candidate; bad [ensemble] tables are refused by the CLI in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selection.artifacts.arrays import decode_holdout
from selection.leaderboard.frame import leaderboard
from selection.signature import INPUT_NAME, OUTPUT_NAME
from selection.store import Store
from shadow.cli.main import main
from shadow.errors import RefitError
from shadow.sweep.ensemble import ENSEMBLE_FAMILY, build_ensemble
from shadow.sweep.refit import plan_refit, refit_candidate
from tests.shadow.conftest import separable_frame, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
[sweep]
name = "ensemble"
dataset = "{dataset}"
seed = 1

[holdout]
rows = 120

[[slices]]
strategy = "all"

[[slices]]
strategy = "recent"
rows = 150

[model]
family = "mlp"

[model.params]
width = [4, 8]
hidden_layers = 1
epochs = 10
lr = 0.03

[gate]
min_improvement = 0.0
require = "no-regression"
{ensemble}
"""


def write_config(tmp_path: Path, ensemble: str) -> Path:
    dataset = write_dataset(tmp_path / "catalog", separable_frame(600, seed=4))
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG.format(dataset=dataset, ensemble=ensemble))
    return config


def probabilities(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


@pytest.fixture(scope="module")
def ensembled(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[Path, str]:
    """One real sweep with `[ensemble] top_k = 3`; its home and sweep id."""
    tmp = tmp_path_factory.mktemp("ensemble")
    config = write_config(tmp, "[ensemble]\ntop_k = 3\nweights = \"holdout\"\n")
    home = tmp / "home"
    assert main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"]) == 0
    with Store.open(home, create=False) as store:
        sweep_id = store.latest_sweep_id()
    assert sweep_id is not None
    return home, sweep_id


def test_sweep_stores_its_top_candidates_as_one_ranked_candidate(ensembled):
    home, sweep_id = ensembled
    with Store.open(home, create=False) as store:
        records = store.list_candidates(sweep_id)
        [ensemble] = [r for r in records if r.family == ENSEMBLE_FAMILY]
        members = [store.get_candidate(m) for m in ensemble.params["members"]]
        board = leaderboard(store, sweep=sweep_id)
        sweep = store.get_sweep(sweep_id)
        x, y = decode_holdout(store.artifacts.read_verified(sweep.holdout.data_sha256))
        combined = store.artifacts.read_verified(ensemble.onnx_sha256)
        member_models = [store.artifacts.read_verified(m.onnx_sha256) for m in members]
        again = build_ensemble(store, sweep_id, top_k=3)
        n_after = len(store.list_candidates(sweep_id))
    assert ensemble.status == "ok" and ensemble.slice_id == "ensemble-top3"
    assert len(members) == 3 and len(records) == 5  # 2 slices x 2 widths, and the ensemble
    # Distinct slices first, then the next best: both slices are represented.
    assert {m.slice_id for m in members} == {"all", "recent-150"}
    weights = ensemble.params["weights"]
    assert ensemble.params["weighting"] == "holdout" and sum(weights) == pytest.approx(1.0)
    assert ensemble.lineage["ensemble"]["members"] == ensemble.params["members"]
    # Measured on the device like any candidate: accuracy on the holdout, latency, real size.
    result = ensemble.device("host-cpu")
    assert result.status == "ok" and result.latency_ms > 0
    assert result.size_bytes == len(combined) > max(len(m) for m in member_models)
    expected = sum(w * probabilities(m, x) for w, m in zip(weights, member_models))
    got = probabilities(combined, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert result.accuracy == pytest.approx(float(np.mean(got.argmax(axis=1) == y)))
    # On the leaderboard, ranked with the others by the sweep's policy.
    row = board[board["candidate_id"] == ensemble.candidate_id].iloc[0]
    assert row["family"] == ENSEMBLE_FAMILY and row["eligible"] and row["rank"] >= 1
    # Deterministic: building it again returns the stored one.
    assert again.candidate_id == ensemble.candidate_id and n_after == len(records)


def test_refit_of_an_ensemble_refits_its_members_and_combines_them_again(ensembled, tmp_path):
    import shutil

    source, sweep_id = ensembled
    home = tmp_path / "home"
    shutil.copytree(source, home, symlinks=True)
    with Store.open(home, create=False) as store:
        [ensemble] = [r for r in store.list_candidates(sweep_id) if r.family == ENSEMBLE_FAMILY]
        with pytest.raises(RefitError, match="is an ensemble"):  # no single task to plan yet
            plan_refit(store, ensemble.candidate_id)
        refit = refit_candidate(store, ensemble.candidate_id)
        member_refits = [store.get_candidate(c) for c in refit.lineage["ensemble"]["member_refits"]]
        planned = plan_refit(store, ensemble.candidate_id)  # now the stored refit is found
        again = refit_candidate(store, ensemble.candidate_id)
        combined = store.artifacts.read_verified(refit.onnx_sha256)
        models = [store.artifacts.read_verified(r.onnx_sha256) for r in member_refits]
        board = leaderboard(store, sweep=sweep_id)
    assert refit.refit_of == ensemble.candidate_id and refit.family == ENSEMBLE_FAMILY
    assert refit.slice_id == "ensemble-top3+holdout" and refit.params == ensemble.params
    assert [r.refit_of for r in member_refits] == ensemble.params["members"]
    assert refit.refit["holdout_rows_added"] == 120 and "host-cpu" in refit.refit["checks"]
    assert planned.stored is not None and planned.stored.candidate_id == refit.candidate_id
    assert again.candidate_id == refit.candidate_id
    # The same weights over the refit members.
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    expected = sum(w * probabilities(m, x) for w, m in zip(ensemble.params["weights"], models))
    np.testing.assert_allclose(probabilities(combined, x), expected, rtol=1e-5, atol=1e-6)
    assert refit.candidate_id not in set(board["candidate_id"])  # refits are never ranked
    # `shadow promote --refit` ships the ensemble's refit on the ensemble's own decision.
    code = main(["promote", ensemble.candidate_id, "--refit", "--force", "--reason", "test",
                 "--home", str(home), "--format", "json"])
    assert code == 0
    manifest = json.loads((home / "channels" / "production" / "manifest.json").read_text())
    assert manifest["candidate_id"] == refit.candidate_id and manifest["refit_of"] == ensemble.candidate_id


@pytest.mark.parametrize("table, words", [
    ("[ensemble]\ntop_k = 1\n", "top_k"),
    ("[ensemble]\nweights = \"recent\"\n", "weights"),
    ("[ensemble]\ntop = 3\n", "top"),
])
def test_bad_ensemble_tables_are_refused_in_one_line(tmp_path, capsys, table, words):
    config = write_config(tmp_path, table)
    home = tmp_path / "home"
    assert main(["sweep", "run", str(config), "--home", str(home), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[ensemble]" in err and words in err
    assert "Traceback" not in err and not (home / "shadow.db").exists()


def test_an_ensemble_is_quantized_and_compiled_for_an_edge_device_like_any_candidate():
    from selection.testing import tiny_classifier
    from shadow.models.ensemble import combine
    from shadow.sweep.task import SweepData, evaluate_on_devices

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    data = SweepData("s", x, (x[:, 0] > 0).astype(np.int64), 200, 300, {}, 2,
                     ("host-cpu", "snapdragon-8-gen-2-htp"))
    members = [tiny_classifier(seed) for seed in (1, 2, 3)]
    alone, _ = evaluate_on_devices(members[0], data, np.arange(200), 0)
    together, artifacts = evaluate_on_devices(combine(members), data, np.arange(200), 0)
    edge, edge_alone = together[1], alone[1]
    assert edge.status == "ok" and edge.emulator == "qnn-htp" and edge.extra["has_fallback"] is False
    # Three members on the device: more to store and, by the cost model, slower than one.
    assert edge.size_bytes > edge_alone.size_bytes and edge.latency_ms > edge_alone.latency_ms
    assert edge.artifact_sha256 in artifacts and edge.predictions_sha256 in artifacts
