"""MLflow tracking and registry against a real ``mlflow server`` on 127.0.0.1.

One server for the module (SQLite backend store, artifacts served by it) and one tiny sweep
(2 ok candidates, 2 that diverge): runs with params, per-device metrics and lineage tags,
each ok model logged in the onnx flavour with its signature, FAILED runs for the failures;
the registry's 'champion' alias following promote, promote and rollback; a server lost
mid-sweep (every result stored, the rest logged later by `shadow mlflow sync`, none twice);
and, with the server stopped, a sweep, a promotion and a rollback that refuse before anything
changes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest

from selection.artifacts.content import sha256_bytes
from selection.leaderboard.frame import leaderboard
from selection.store import Store
from shadow.cli.main import main
from tests.mlflow_server import MlflowServer
from tests.shadow.conftest import separable_frame, write_dataset

mlflow = pytest.importorskip("mlflow")  # the [mlflow] extra (installed by the test extra)
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def swept(server: MlflowServer, tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> dict:
    """The tiny sweep, logged to the server through its [mlflow] table (as a user writes it)."""
    root = tmp_path_factory.mktemp("mlflow-sweep")
    frame = separable_frame(n=400)
    frame.loc[:49, "x0"] = 3e38  # the oldest rows make any slice holding them diverge
    write_dataset(root / "catalog", frame, name="tracked")
    config = root / "tracked.toml"
    config.write_text(
        '[sweep]\nname = "mlflow-e2e"\ndataset = "catalog/tracked/dataset.toml"\n[holdout]\nrows = 100\n'
        '[[slices]]\nstrategy = "all"\n[[slices]]\nstrategy = "window"\nsize = 100\nstride = 100\n'
        '[model]\nfamily = "mlp"\n[model.params]\nwidth = 4\nepochs = 2\n'
        f'[mlflow]\ntracking_uri = "{server.url}"\n'
    )
    home = root / "home"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"])
    assert code == 0
    summary = json.loads(out.getvalue())  # stdout is the JSON alone (MLflow's run URLs go elsewhere)
    assert summary["mlflow"]["logged"] == 4 and summary["mlflow"]["experiment"] == "mlflow-e2e"
    with Store.open(home, create=False) as store:
        sweep_id = store.latest_sweep_id()
        records = {r.candidate_id: r for r in store.list_candidates(sweep_id)}
        board = leaderboard(store)
        dataset = store.get_sweep(sweep_id).dataset
    return {"home": home, "config": config, "sweep_id": sweep_id, "records": records,
            "board": board, "model_name": f"{dataset}-production"}


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def client(server: MlflowServer):
    return mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def test_every_candidate_is_a_run_with_params_metrics_lineage_and_its_model(server, swept, monkeypatch):
    c = client(server)
    experiment = c.get_experiment_by_name("mlflow-e2e")  # named after the sweep
    runs = c.search_runs([experiment.experiment_id])
    by_id = {r.data.tags["shadow.candidate_id"]: r for r in runs}
    assert set(by_id) == set(swept["records"])  # one run per candidate, none twice
    ok = [r for r in swept["records"].values() if r.status == "ok"]
    failed = [r for r in swept["records"].values() if r.status == "failed"]
    assert len(ok) == 2 and len(failed) == 2
    for record in ok:
        run = by_id[record.candidate_id]
        assert run.info.status == "FINISHED" and run.info.run_name == record.candidate_id
        assert run.data.params["model.width"] == "4" and run.data.params["family"] == "mlp"
        assert run.data.params["slice_id"] == record.slice_id
        tags = run.data.tags
        assert tags["shadow.sweep_id"] == swept["sweep_id"]
        assert tags["shadow.dataset_fingerprint"] == record.lineage["dataset_fingerprint"]
        assert tags["shadow.seed"] == str(record.seed)
        assert tags["shadow.onnx_sha256"] == record.onnx_sha256
        result = record.device("host-cpu")
        assert tags["shadow.artifact_sha256.host-cpu"] == result.artifact_sha256
        metrics = run.data.metrics
        assert metrics["host-cpu.accuracy"] == pytest.approx(result.accuracy)
        assert metrics["host-cpu.latency_ms"] == pytest.approx(result.latency_ms)
        assert metrics["host-cpu.size_bytes"] == result.size_bytes
        row = swept["board"].set_index("candidate_id").loc[record.candidate_id]
        assert metrics["host-cpu.eligible"] == (1.0 if bool(row["eligible"]) else 0.0)

        # The model, logged in the onnx flavour with the signature an edge app needs.
        model_uri = tags[f"shadow.model_uri.{record.onnx_sha256}"]
        # Not mlflow.set_tracking_uri: it writes os.environ behind monkeypatch's back, and the
        # dead server's URL then leaked into every later test of the session.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        info = mlflow.models.get_model_info(model_uri)
        assert "onnx" in info.flavors
        spec = info.signature.inputs.inputs[0]
        assert (spec.name, spec.shape) == ("features", (-1, 2))
        assert info.metadata["shadow_signature"]["classes"] == ["0", "1"]
        loaded = mlflow.onnx.load_model(model_uri)
        rows = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
        ours = Store.open(swept["home"], create=False)
        with ours:
            original = ours.artifacts.read_verified(record.onnx_sha256)
        got = ort.InferenceSession(loaded.SerializeToString()).run(None, {"features": rows})[0]
        want = ort.InferenceSession(original).run(None, {"features": rows})[0]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # Logging a model sets MLflow's global URI for the call; the user's variable survives it.
    from selection.tracking.client import log_onnx_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    log_onnx_model(server.url, by_id[ok[0].candidate_id].info.run_id, original, None, name="probe", tags={})
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9"
    for record in failed:
        run = by_id[record.candidate_id]
        assert run.info.status == "FAILED"
        assert "training diverged" in run.data.tags["shadow.error"]
        assert not any(k.startswith("shadow.model_uri.") for k in run.data.tags)


def test_the_champion_alias_follows_promote_and_rollback(server, swept, capsys):
    home, name = str(swept["home"]), swept["model_name"]
    ok = swept["board"][swept["board"]["status"] == "ok"].sort_values("rank")
    best, second = ok["candidate_id"].tolist()[:2]
    c = client(server)

    code, out, err = run_cli(capsys, "promote", best, "--home", home, "--force", "--reason", "first")
    assert code == 0, err
    champion = c.get_model_version_by_alias(name, "champion")
    assert champion.tags["shadow.candidate_id"] == best
    assert champion.tags["shadow.history_id"] == "1"
    first_version = champion.version

    code, out, err = run_cli(capsys, "promote", second, "--home", home, "--force", "--reason", "second")
    assert code == 0, err
    assert c.get_model_version_by_alias(name, "champion").tags["shadow.candidate_id"] == second

    code, out, err = run_cli(capsys, "rollback", "--home", home, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["candidate_id"] == best
    champion = c.get_model_version_by_alias(name, "champion")
    assert (champion.version, champion.tags["shadow.candidate_id"]) == (first_version, best)
    # One version per shipped model: the rollback reused the first one.
    assert len(c.search_model_versions(f"name = '{name}'")) == 2
    code, out, err = run_cli(capsys, "mlflow", "sync", "--channel", "production", "--home", home,
                             "--format", "json")
    assert code == 0, err
    assert json.loads(out)["champion_version"] == first_version


def test_a_server_lost_mid_sweep_loses_nothing_and_what_follows_refuses_or_catches_up(
        server, swept, capsys, ray_local):
    from selection.channels.champion_alias import AliasMove
    from selection.channels.promotion import current
    from selection.home import Home
    from shadow.sweep import load_config, prepare_sweep, run_sweep

    home, name = swept["home"], swept["model_name"]
    model = home / "channels" / "production" / "model.onnx"
    prepared = prepare_sweep(load_config(swept["config"]), home=Home.resolve(home))

    def lose_the_server(progress) -> None:  # the server dies once the first result is logged
        if progress.done == 1:
            server.stop()

    with Store.open(home, create=False) as store:
        summary = run_sweep(prepared, store, on_progress=lose_the_server)
        stored = store.list_candidates(prepared.sweep_id)
        n_sweeps = len(store.list_sweeps())
    assert len(stored) == 4 and summary.ok + summary.failed == 4  # every result kept in the store
    assert (summary.mlflow["logged"], summary.mlflow["not_logged"]) == (1, 3)
    assert "failed" in summary.mlflow["error"]
    ok = swept["board"][swept["board"]["status"] == "ok"].sort_values("rank")
    second = ok["candidate_id"].tolist()[1]
    before = model.read_bytes()
    try:
        # Promotion: refused before the channel's transaction; history and files unchanged.
        code, out, err = run_cli(capsys, "promote", second, "--home", str(home), "--force",
                                 "--reason", "server down")
        assert code == 2
        assert "cannot be reached" in err and "nothing changed" in err and len(err.strip().splitlines()) == 1
        code, out, err = run_cli(capsys, "history", "--home", str(home), "--format", "json")
        assert [h["action"] for h in json.loads(out)] == ["rollback", "promote", "promote"]
        assert model.read_bytes() == before
        # A sweep asked to track fails fast: before Ray trains anything or the store changes.
        code, out, err = run_cli(capsys, "sweep", "run", str(swept["config"]), "--home", str(home),
                                 "--quiet")
        assert code == 2 and "cannot be reached" in err
        with Store.open(home, create=False) as store:
            assert len(store.list_sweeps()) == n_sweeps
            # The alias move after a swap failing (the server gone in that instant): the change
            # stands and an error event records the alias left behind.
            record = current(store, "production")
            dead = mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)
            why = AliasMove(dead, server.url, name, "1", "production").apply(store, record)
            event = store.list_events(channel="production", kinds="error", limit=1)[0]
        assert why is not None and event.history_id == record.history_id
        assert event.evidence["mlflow"]["pending"] is True and "shadow mlflow sync" in event.reason
    finally:
        server.start()
    # Back up: the sync logs the three MLflow lacks, none twice; promotion works again.
    code, out, err = run_cli(capsys, "mlflow", "sync", "--sweep", prepared.sweep_id, "--home", str(home),
                             "--format", "json")
    assert code == 0, err
    assert (json.loads(out)["logged"], json.loads(out)["not_logged"]) == (3, 0)
    c = client(server)
    experiment = c.get_experiment_by_name("mlflow-e2e").experiment_id
    runs = c.search_runs([experiment], filter_string=f"tags.`shadow.sweep_id` = '{prepared.sweep_id}'")
    assert sorted(r.data.tags["shadow.candidate_id"] for r in runs) == sorted(r.candidate_id for r in stored)
    code, out, err = run_cli(capsys, "promote", second, "--home", str(home), "--force", "--reason", "back up")
    assert code == 0, err
    champion = c.get_model_version_by_alias(name, "champion")
    assert champion.tags["shadow.candidate_id"] == second
    assert sha256_bytes(model.read_bytes()) == champion.tags["shadow.sha256"]

    # Rollback readies the registry first too: down, it refuses and changes nothing.
    server.stop()
    code, out, err = run_cli(capsys, "rollback", "--home", str(home))
    assert code == 2 and "cannot be reached" in err and "nothing changed" in err
    code, out, err = run_cli(capsys, "history", "--home", str(home), "--format", "json")
    assert [h["action"] for h in json.loads(out)][:2] == ["promote", "rollback"]
    assert sha256_bytes(model.read_bytes()) == champion.tags["shadow.sha256"]


def test_a_tracking_uri_that_is_no_uri_is_one_line_before_anything_runs(swept, capsys):
    code, out, err = run_cli(capsys, "sweep", "run", str(swept["config"]), "--home", str(swept["home"]),
                             "--mlflow", "127.0.0.1:5000", "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "--mlflow: the MLflow tracking URI must start with one of http:" in err
