"""MLflow tracking and registry against a real ``mlflow server`` on 127.0.0.1.

One server for the module (SQLite backend store, artifacts served by it) and one tiny sweep
(2 ok candidates, 2 that diverge): runs with params, per-device metrics and lineage tags,
each ok model logged in the onnx flavour with its signature, FAILED runs for the failures;
the registry's 'champion' alias following promote, promote and rollback; a server lost
mid-sweep (every result stored, the rest logged later by `shadow mlflow sync`, none twice);
with the server stopped, a sweep and a promotion (with --refit: before training) that refuse
before anything changes, and a rollback that rolls back and leaves a pending-alias event;
tracking off ([mlflow] enabled = false, the backtest's) despite $MLFLOW_TRACKING_URI; the
alias moved outside the channel lock; a renamed registered model; no duplicate runs on a
resume; MLflow's request settings scoped to its calls.
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
        # promote --refit: the registry is checked before the refit trains (nothing trained).
        from selection.channels.champion_alias import RegistrySyncError
        from selection.gate.decision import promote_through_gate

        trained: list[str] = []
        with Store.open(home, create=False) as store, pytest.raises(RegistrySyncError, match="cannot be reached"):
            promote_through_gate(store, second, force=True, reason="refit, server down",
                                 refit=lambda cid: trained.append(cid) or cid)
        assert trained == []
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

    # Rollback never waits on the registry: down, it rolls back all the same, and the alias
    # left behind is an error event that `shadow mlflow sync --channel` clears once it is up.
    server.stop()
    try:
        code, out, err = run_cli(capsys, "rollback", "--home", str(home), "--format", "json")
        assert code == 0, err
        rolled = json.loads(out)
        code, out, err = run_cli(capsys, "history", "--home", str(home), "--format", "json")
        assert [h["action"] for h in json.loads(out)][:2] == ["rollback", "promote"]
        assert sha256_bytes(model.read_bytes()) == rolled["sha256"] != champion.tags["shadow.sha256"]
        with Store.open(home, create=False) as store:
            event = store.list_events(channel="production", kinds="error", limit=1)[0]
        assert event.history_id == rolled["history_id"] and event.evidence["mlflow"]["pending"] is True
        assert "cannot be reached" in event.reason and "shadow mlflow sync" in event.reason
    finally:
        server.start()
    assert c.get_model_version_by_alias(name, "champion").tags["shadow.candidate_id"] == second
    code, out, err = run_cli(capsys, "mlflow", "sync", "--channel", "production", "--home", str(home),
                             "--format", "json")
    assert code == 0, err
    assert c.get_model_version_by_alias(name, "champion").tags["shadow.sha256"] == rolled["sha256"]


def test_a_tracking_uri_that_is_no_uri_is_one_line_before_anything_runs(swept, capsys):
    code, out, err = run_cli(capsys, "sweep", "run", str(swept["config"]), "--home", str(swept["home"]),
                             "--mlflow", "127.0.0.1:5000", "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "--mlflow: the MLflow tracking URI must start with one of http:" in err


def _ok_ids(store: Store, sweep_id: str) -> list[str]:
    return [r.candidate_id for r in store.list_candidates(sweep_id) if r.status == "ok"]


def _sweep_with(swept: dict, capsys, mlflow_table: str, name: str) -> str:
    """Another tiny sweep of the same data into the same home, with its own [mlflow] table."""
    text = swept["config"].read_text()
    config = swept["config"].with_name(f"{name}.toml")
    config.write_text(text[:text.index("[mlflow]")] + mlflow_table)
    code, out, err = run_cli(capsys, "sweep", "run", str(config), "--home", str(swept["home"]),
                             "--quiet", "--format", "json")
    assert code == 0, err
    return str(json.loads(out)["sweep_id"])


def test_tracking_off_ignores_the_environment_for_sweeps_and_promotions(
        server, swept, capsys, monkeypatch, ray_local):
    """[mlflow] enabled = false (what the backtest stores with its sweeps) beats $MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    sweep_id = _sweep_with(swept, capsys, "[mlflow]\nenabled = false\n", "untracked")
    c = client(server)
    experiment = c.get_experiment_by_name("mlflow-e2e").experiment_id
    assert not c.search_runs([experiment], filter_string=f"tags.`shadow.sweep_id` = '{sweep_id}'")
    with Store.open(swept["home"], create=False) as store:
        candidate = _ok_ids(store, sweep_id)[0]
    versions_before = len(c.search_model_versions(f"name = '{swept['model_name']}'"))
    code, out, err = run_cli(capsys, "promote", candidate, "--home", str(swept["home"]), "--force",
                             "--reason", "untracked")
    assert code == 0, err
    assert len(c.search_model_versions(f"name = '{swept['model_name']}'")) == versions_before
    assert not c.search_model_versions(f"tags.`shadow.candidate_id` = '{candidate}'")


def test_the_alias_moves_after_the_channel_lock_is_released(server, swept, capsys, monkeypatch):
    from selection.channels import champion_alias
    from selection.channels.files import channel_lock
    from selection.channels.promotion import current, promote
    from selection.errors import PromotionError
    from selection.home import Home

    home = Home.resolve(swept["home"])
    lock_free: list[bool] = []

    class LockProbe(mlflow.MlflowClient):  # the real client; it only notes whether the lock is free
        def set_registered_model_alias(self, name, alias, version):
            try:
                with channel_lock(home, "production"):
                    lock_free.append(True)
            except PromotionError:
                lock_free.append(False)
            return super().set_registered_model_alias(name, alias, version)

    monkeypatch.setattr(champion_alias, "connect", lambda uri: LockProbe(tracking_uri=uri, registry_uri=uri))
    with Store.open(swept["home"], create=False) as store:
        serving = current(store, "production").candidate_id
        target = next(i for i in _ok_ids(store, swept["sweep_id"]) if i != serving)
        record = promote(store, target, reason="lock probe")
    assert lock_free == [True]
    champion = client(server).get_model_version_by_alias(swept["model_name"], "champion")
    assert (champion.tags["shadow.candidate_id"], champion.tags["shadow.history_id"]) == (
        target, str(record.history_id))


def test_a_renamed_registered_model_takes_the_alias_with_it(server, swept, capsys, ray_local):
    sweep_id = _sweep_with(swept, capsys, f'[mlflow]\ntracking_uri = "{server.url}"\n'
                           'registered_model = "renamed-model"\n', "renamed")
    c, home, name = client(server), str(swept["home"]), swept["model_name"]
    with Store.open(swept["home"], create=False) as store:
        candidate = _ok_ids(store, sweep_id)[0]
    code, out, err = run_cli(capsys, "promote", candidate, "--home", home, "--force", "--reason", "renamed")
    assert code == 0, err
    assert c.get_model_version_by_alias("renamed-model", "champion").tags["shadow.candidate_id"] == candidate
    assert "champion" not in c.get_registered_model(name).aliases  # the model the channel left
    code, out, err = run_cli(capsys, "rollback", "--home", home, "--format", "json")
    assert code == 0, err
    back = json.loads(out)["candidate_id"]
    assert c.get_model_version_by_alias(name, "champion").tags["shadow.candidate_id"] == back
    assert "champion" not in c.get_registered_model("renamed-model").aliases


def test_a_resume_logs_nothing_mlflow_already_holds(server, swept):
    from shadow.sweep.tracking import tracker_for_stored

    c = client(server)
    experiment = c.get_experiment_by_name("mlflow-e2e").experiment_id
    query = f"tags.`shadow.sweep_id` = '{swept['sweep_id']}'"
    before = len(c.search_runs([experiment], filter_string=query))
    with Store.open(swept["home"], create=False) as store:
        stored = [r for r in store.list_candidates(swept["sweep_id"]) if not r.refit_of]
        tracker = tracker_for_stored(store, swept["sweep_id"])
        tracker.start(store, swept["sweep_id"], stored)  # all of them are in MLflow already
        # What the runner does next on a resume for an ensemble or warm start found stored.
        tracker.log(stored[0], {})
    assert (tracker.logged, tracker.not_logged) == (0, [])
    assert len(c.search_runs([experiment], filter_string=query)) == before


def test_mlflow_request_settings_hold_only_while_its_calls_run(server, monkeypatch):
    import sys

    from selection.tracking.client import calls, connect

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "3")  # the user's own: kept
    stdout = sys.stdout
    c = connect(server.url)
    with calls(server.url, "probe"):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "3"
        assert sys.stdout is stdout  # stdout is not swapped under other threads
        c.search_experiments(max_results=1)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "3"
