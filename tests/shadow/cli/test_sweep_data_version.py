"""`shadow sweep run --data-version` and `--resume` on a dataset that grows, through the CLI.

A resume is checked against the stored sweep's data version before Ray starts:
the refusal must be one line, exit 2, with the home and store unchanged. The
proof that Ray never started: the refusing run is a real process pointed at an
unreachable cluster (``--address 127.0.0.1:9``), which would fail with a
cluster error, not the resume refusal, if it tried to connect first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from selection.home import Home
from selection.store import Store
from shadow.data.catalog import find_manifest
from shadow.data.directory_ledger import ledger_path
from shadow.data.loader import list_versions
from shadow.sweep.config import load_config
from shadow.sweep.prepare import prepare_sweep, slice_records, sweep_record
from tests.bad_inputs.contract import assert_user_error, run_cli, shadow, snapshot
from tests.shadow.data.test_directory_source import timed_frame, write_directory_dataset

SWEEP = """
[sweep]
name = "versions"
dataset = "folder"
seed = 1

[holdout]
rows = 20

[[slices]]
strategy = "all"

[model]
family = "mlp"

[model.params]
width = [4]
epochs = 1
"""


@pytest.fixture
def grown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A folder dataset with three batch files, a sweep config and a home."""
    catalog = tmp_path / "catalog"
    incoming = write_directory_dataset(catalog)
    for i, start in enumerate((0, 60, 100)):
        timed_frame(60 if i == 0 else 40, start, seed=i).to_csv(
            incoming / f"2026-11-0{i + 1}.csv", index=False)
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP)
    monkeypatch.setenv("SHADOW_CATALOG", str(catalog))
    monkeypatch.chdir(tmp_path)
    return {"folder": incoming, "config": config, "home": tmp_path / "home", "catalog": catalog}


def _stored_sweep(paths: dict[str, Path], version: str) -> str:
    """A sweep recorded as started on ``version`` (as a driver stopped before its first result)."""
    prepared = prepare_sweep(load_config(paths["config"]), home=Home(paths["home"]),
                             data_version=version)
    with Store.open(paths["home"], create=True) as store:
        store.artifacts.put(prepared.holdout_data)
        store.create_sweep(sweep_record(prepared), slice_records(prepared))
    return prepared.sweep_id


def test_resume_on_another_data_version_is_refused_before_ray_starts(grown: dict[str, Path]):
    sweep_id = _stored_sweep(grown, "2")
    before = snapshot(grown["home"])
    env = {"SHADOW_CATALOG": str(grown["catalog"]), "RAY_ADDRESS": ""}
    run = shadow("sweep", "run", str(grown["config"]), "--home", str(grown["home"]),
                 "--resume", sweep_id, "--data-version", "3", "--address", "127.0.0.1:9",
                 env=env)
    assert_user_error(run, f"cannot resume sweep {sweep_id!r}", "it was started on data version",
                      "drop --resume")
    assert "Ray" not in run.stderr and "cluster" not in run.stderr
    assert snapshot(grown["home"]) == before


def test_resume_whose_version_no_longer_loads_is_refused_in_one_line(
    grown: dict[str, Path], capsys: pytest.CaptureFixture[str],
):
    sweep_id = _stored_sweep(grown, "2")
    # Nothing pinned the files (the sweep never ran): file 2 may change, and version 2 is gone.
    timed_frame(40, 60, seed=7).to_csv(grown["folder"] / "2026-11-02.csv", index=False)
    before = snapshot(grown["home"])
    out = run_cli(capsys, "sweep", "run", str(grown["config"]), "--home", str(grown["home"]),
                  "--resume", sweep_id, "--address", "127.0.0.1:9")
    assert_user_error(out, f"cannot resume sweep {sweep_id!r}", "no longer loads",
                      "start a new sweep")
    assert snapshot(grown["home"]) == before


def test_unknown_data_version_is_one_line(grown: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    out = run_cli(capsys, "sweep", "run", str(grown["config"]), "--home", str(grown["home"]),
                  "--data-version", "9", "--address", "127.0.0.1:9")
    assert_user_error(out, "dataset 'folder' has no version '9'", "versions 1-3",
                      "shadow data versions folder")
    assert not grown["home"].exists()


def test_help_explains_data_version(capsys: pytest.CaptureFixture[str]):
    out = run_cli(capsys, "sweep", "run", "--help")
    assert out.code == 0
    assert "--data-version N|FP" in out.stdout and "shadow data versions NAME" in out.stdout


@pytest.mark.slow
def test_sweep_on_an_earlier_version_pins_it_and_resume_verifies_it(
    grown: dict[str, Path], capsys: pytest.CaptureFixture[str], ray_local: None,
):
    home, folder = grown["home"], grown["folder"]
    manifest = find_manifest("folder")
    versions = list_versions(manifest, Home(home))
    out = run_cli(capsys, "sweep", "run", str(grown["config"]), "--home", str(home),
                  "--data-version", versions[1].fingerprint[:8], "--format", "json", "--quiet")
    assert out.code == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["data_version"] == versions[1].fingerprint and summary["ok"] == 1
    with Store.open(home) as store:
        sweep = store.get_sweep(summary["sweep_id"])
    assert sweep.dataset_fingerprint == versions[1].fingerprint
    assert sweep.holdout.stop == 100  # version 2: the first two files, 60 + 40 rows
    pinned = json.loads(ledger_path(Home(home), "folder").read_text())["files"]
    assert [f["name"] for f in pinned] == ["2026-11-01.csv", "2026-11-02.csv"]

    # More data arrives; a resume still trains on the sweep's own version (nothing left to run).
    timed_frame(30, 140, seed=8).to_csv(folder / "2026-11-04.csv", index=False)
    again = run_cli(capsys, "sweep", "run", str(grown["config"]), "--home", str(home),
                    "--resume", summary["sweep_id"], "--format", "json", "--quiet")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["data_version"] == versions[1].fingerprint
    assert json.loads(again.stdout)["skipped"] == 1

    # A pinned file edited: the resume is refused, naming the file, with nothing changed.
    frame = pd.read_csv(folder / "2026-11-01.csv")
    frame.loc[0, "x1"] = -5.0
    frame.to_csv(folder / "2026-11-01.csv", index=False)
    before = snapshot(home)
    refused = run_cli(capsys, "sweep", "run", str(grown["config"]), "--home", str(home),
                      "--resume", summary["sweep_id"])
    assert_user_error(refused, "'2026-11-01.csv'", "changed since version 1 was recorded")
    assert snapshot(home) == before
