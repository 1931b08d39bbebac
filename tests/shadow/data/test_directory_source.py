"""A dataset that is a folder of batch files: versions, fingerprints, the ledger, bad folders.

Real CSV and Parquet files in a real folder, a real catalog entry and home;
the CLI runs in this process. Every refusal must be one line, exit 2, and leave
the home exactly as it was (files hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selection.home import Home
from shadow.data.catalog import find_manifest
from shadow.data.directory_ledger import base_fingerprint, ledger_path
from shadow.data.loader import list_versions, load_dataset, record_version
from shadow.data.versions import VersionNotFoundError, version_fingerprint
from shadow.errors import ConfigError, DatasetError, IntegrityError
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.shadow.conftest import separable_frame


def timed_frame(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """separable_frame plus an increasing integer time column 't'."""
    frame = separable_frame(n, seed=seed)
    frame.insert(0, "t", np.arange(start, start + n))
    return frame


def write_directory_dataset(catalog: Path, *, name: str = "folder", source: str = "") -> Path:
    """A catalog entry reading batches from ``catalog/<name>/incoming``; returns that folder."""
    entry = catalog / name
    (entry / "incoming").mkdir(parents=True)
    (entry / "dataset.toml").write_text(
        f'name = "{name}"\ntarget = "label"\nfeatures = ["x0", "x1"]\ntime_column = "t"\n'
        f'[source]\nkind = "directory"\npath = "incoming"\n{source}'
    )
    return entry / "incoming"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Dataset 'folder' with three batch files (two CSV, one Parquet: t = 0..139); returns the folder."""
    catalog = tmp_path / "catalog"
    incoming = write_directory_dataset(catalog)
    timed_frame(60, 0, seed=1).to_csv(incoming / "2026-11-01.csv", index=False)
    timed_frame(40, 60, seed=2).to_parquet(incoming / "2026-11-02.parquet")
    timed_frame(40, 100, seed=3).to_csv(incoming / "2026-11-03.csv", index=False)
    monkeypatch.setenv("SHADOW_CATALOG", str(catalog))
    monkeypatch.chdir(tmp_path)
    return incoming


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def versions_cli(capsys: pytest.CaptureFixture[str], home: Path):
    return run_cli(capsys, "data", "versions", "folder", "--home", str(home), "--format", "json")


def test_each_prefix_of_files_is_a_version_named_by_content_hashes(folder: Path, tmp_path: Path):
    manifest = find_manifest("folder")
    names = sorted(p.name for p in folder.iterdir())
    shas = [sha(folder / n) for n in names]
    home = Home(tmp_path / "home")

    latest = load_dataset(manifest, home)
    assert latest.n_rows == 140
    assert latest.fingerprint == version_fingerprint(base_fingerprint(manifest), shas)
    rows = pd.concat([pd.read_csv(folder / names[0]), pd.read_parquet(folder / names[1]),
                      pd.read_csv(folder / names[2])], ignore_index=True)
    np.testing.assert_array_equal(latest.features, rows[["x0", "x1"]].to_numpy(np.float32))

    second = load_dataset(manifest, home, "2")
    assert second.n_rows == 100
    assert second.fingerprint == version_fingerprint(base_fingerprint(manifest), shas[:2])
    # A fingerprint prefix names the same version; the controller passes whole fingerprints.
    assert load_dataset(manifest, home, second.fingerprint[:8]).fingerprint == second.fingerprint
    assert load_dataset(manifest, home, second.fingerprint).n_rows == 100
    with pytest.raises(VersionNotFoundError, match="versions 1-3"):
        load_dataset(manifest, home, "7")
    assert not (tmp_path / "home").exists()  # loading records nothing


def test_versions_lists_and_pins_them_then_a_new_file_is_the_next_version(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    home = tmp_path / "home"
    listed = versions_cli(capsys, home)
    assert listed.code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert [r["rows"] for r in rows] == [60, 100, 140]
    assert [r["source"] for r in rows] == ["2026-11-01.csv", "2026-11-02.parquet", "2026-11-03.csv"]
    assert all(r["created_at"] for r in rows)  # pinned: recorded now
    ledger = json.loads(ledger_path(Home(home), "folder").read_text())
    assert [e["name"] for e in ledger["files"]] == [r["source"] for r in rows]

    timed_frame(30, 140, seed=4).to_csv(folder / "2026-11-04.csv", index=False)
    (folder / ".2026-11-05.csv.tmp").write_text("half a file")  # a writer's temp file: skipped
    grown = json.loads(versions_cli(capsys, home).stdout)
    assert [r["fingerprint"] for r in grown[:3]] == [r["fingerprint"] for r in rows]
    assert grown[3]["version"] == 4 and grown[3]["rows"] == 170
    assert load_dataset(find_manifest("folder"), Home(home)).fingerprint == grown[3]["fingerprint"]


def test_record_version_pins_only_the_version_a_sweep_used(folder: Path, tmp_path: Path):
    manifest, home = find_manifest("folder"), Home(tmp_path / "home")
    record_version(load_dataset(manifest, home, "2"), home)
    ledger = json.loads(ledger_path(home, "folder").read_text())
    assert [e["name"] for e in ledger["files"]] == ["2026-11-01.csv", "2026-11-02.parquet"]
    assert [e["rows"] for e in ledger["files"]] == [60, 40]
    # File 3 is not pinned yet: changing it is allowed, and changes only version 3.
    timed_frame(10, 100, seed=9).to_csv(folder / "2026-11-03.csv", index=False)
    assert load_dataset(manifest, home).n_rows == 110
    record_version(load_dataset(manifest, home, "2"), home)  # idempotent
    assert [v.created_at != "" for v in list_versions(manifest, home)] == [True, True, False]


@pytest.mark.parametrize("change, fragments", [
    ("edit", ["'2026-11-01.csv'", "changed since version 1 was recorded", "restore it"]),
    ("delete", ["'2026-11-02.parquet'", "is gone", "restore it"]),
    ("insert", ["'2026-10-31.csv' in", "sorts before '2026-11-01.csv'", "rename it"]),
])
def test_a_recorded_file_changed_gone_or_preceded_is_refused_with_home_unchanged(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str,
    fragments: list[str],
):
    home = tmp_path / "home"
    assert versions_cli(capsys, home).code == 0
    if change == "edit":
        frame = pd.read_csv(folder / "2026-11-01.csv")
        frame.loc[3, "x0"] = 99.0
        frame.to_csv(folder / "2026-11-01.csv", index=False)
    elif change == "delete":
        (folder / "2026-11-02.parquet").unlink()
    else:
        timed_frame(60, -60, seed=5).to_csv(folder / "2026-10-31.csv", index=False)
    before = snapshot(home)
    assert_user_error(versions_cli(capsys, home), *fragments)
    with pytest.raises(IntegrityError):
        load_dataset(find_manifest("folder"), Home(home))
    assert snapshot(home) == before


def test_time_going_back_across_files_names_the_file(folder: Path):
    timed_frame(20, 130, seed=6).to_csv(folder / "2026-11-04.csv", index=False)  # 130 < 139
    with pytest.raises(DatasetError, match=r"'2026-11-04.csv'.*time goes backwards"):
        load_dataset(find_manifest("folder"))


@pytest.mark.parametrize("setup, fragments", [
    (lambda f: (f / "README.txt").write_text("notes"), ["'README.txt'", "not a batch file",
                                                        "pattern"]),
    (lambda f: (f / "more").mkdir(), ["'more'", "not a batch file"]),
    (lambda f: f.joinpath("2026-11-04.csv").write_text("t,x0,x1,label\n"), ["'2026-11-04.csv'",
                                                                             "has no rows"]),
    (lambda f: f.joinpath("2026-11-04.csv").write_text("t,x0,label\n200,0.1,1\n"),
     ["'2026-11-04.csv'", "'x1'"]),
])
def test_bad_files_in_the_folder_are_one_line_with_home_unchanged(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup, fragments,
):
    home = tmp_path / "home"
    setup(folder)
    assert_user_error(versions_cli(capsys, home), *fragments)
    assert not home.exists()


def test_a_pattern_leaves_other_files_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    incoming = write_directory_dataset(tmp_path / "catalog", source='pattern = "*.csv"\n')
    timed_frame(60).to_csv(incoming / "a.csv", index=False)
    (incoming / "README.txt").write_text("notes")
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    assert load_dataset(find_manifest("folder")).n_rows == 60


def test_missing_or_empty_folder_and_bad_source_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
):
    incoming = write_directory_dataset(tmp_path / "catalog")
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    home = tmp_path / "home"
    assert_user_error(versions_cli(capsys, home), "holds no file matching '*'")
    incoming.rmdir()
    assert_user_error(versions_cli(capsys, home), "batch folder", "does not exist",
                      "fix [source] path")
    manifest = tmp_path / "catalog/folder/dataset.toml"
    manifest.write_text(manifest.read_text() + 'glob = "*.csv"\n')
    assert_user_error(versions_cli(capsys, home), "unknown key 'glob'",
                      "known keys: kind, path, pattern, index_col")
    with pytest.raises(ConfigError, match="unknown key 'glob'"):
        find_manifest("folder")
    assert not home.exists()


def test_append_checks_the_file_then_copies_it_into_the_folder_and_pins_it(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    batch = tmp_path / "2026-11-04.csv"
    timed_frame(20, 140, seed=5).to_csv(batch, index=False)
    home = tmp_path / "home"
    out = run_cli(capsys, "data", "append", "folder", str(batch), "--home", str(home),
                  "--format", "json")
    assert out.code == 0, out.stderr
    done = json.loads(out.stdout)
    assert (done["version"], done["rows"], done["batch_rows"]) == (4, 160, 20)
    assert (folder / "2026-11-04.csv").read_bytes() == batch.read_bytes()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp file left
    assert load_dataset(find_manifest("folder"), Home(home)).fingerprint == done["fingerprint"]
    pinned = json.loads(ledger_path(Home(home), "folder").read_text())["files"]
    assert [f["name"] for f in pinned][-1] == "2026-11-04.csv" and len(pinned) == 4


def _bad_label_kind(path: Path) -> None:
    timed_frame(20, 140).astype({"label": float}).to_csv(path, index=False)


@pytest.mark.parametrize("name, write, fragments", [
    ("2026-10-30.csv", lambda p: timed_frame(20, 140).to_csv(p, index=False),
     ["would sort before '2026-11-03.csv'", "rename it"]),
    ("2026-11-09.csv", lambda p: p.write_bytes((p.parent / "copy-of-3.csv").read_bytes()),
     ["already in dataset 'folder' (as '2026-11-03.csv', version 3"]),
    ("2026-11-09.csv", lambda p: timed_frame(20, 120).to_csv(p, index=False),
     ["'2026-11-09.csv'", "time goes backwards"]),
    ("2026-11-09.txt", lambda p: timed_frame(20, 140).to_csv(p, index=False),
     ["ending in .csv or .parquet", "rename the file"]),
    ("2026-11-09.csv", _bad_label_kind, ["label column 'label' holds float values"]),
    ("2026-11-09.csv", lambda p: timed_frame(20, 140).drop(columns="x1").to_csv(p, index=False),
     ["lacks column 'x1'"]),
])
def test_a_bad_append_to_a_folder_changes_neither_folder_nor_home(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, write,
    fragments: list[str],
):
    home = tmp_path / "home"
    assert versions_cli(capsys, home).code == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "copy-of-3.csv").write_bytes((folder / "2026-11-03.csv").read_bytes())
    write(outside / name)
    before = snapshot(home), snapshot(folder)
    out = run_cli(capsys, "data", "append", "folder", str(outside / name), "--home", str(home))
    assert_user_error(out, *fragments)
    assert (snapshot(home), snapshot(folder)) == before


def test_the_first_file_of_an_empty_folder_can_be_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
):
    incoming = write_directory_dataset(tmp_path / "catalog")
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    batch = tmp_path / "0001.parquet"
    timed_frame(60).to_parquet(batch)
    out = run_cli(capsys, "data", "append", "folder", str(batch), "--home", str(tmp_path / "home"))
    assert out.code == 0 and out.stderr == "", out.stderr  # no "new labels" warning on the first
    assert [p.name for p in incoming.iterdir()] == ["0001.parquet"]


def test_an_append_while_another_process_pins_still_lands_and_is_pinned_later(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    from selection.atomic import exclusive_lock
    from shadow.data.versions import dataset_dir

    batch = tmp_path / "2026-11-04.csv"
    timed_frame(20, 140, seed=5).to_csv(batch, index=False)
    home = tmp_path / "home"
    lock = dataset_dir(Home(home).check_folder(), "folder")
    lock.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock / ".lock", lambda holder: RuntimeError(holder)):  # a pin under way
        out = run_cli(capsys, "data", "append", "folder", str(batch), "--home", str(home),
                      "--format", "json")
    # The batch was checked and is in the folder: the append succeeded (a refusal here would
    # leave the file in place while saying it was not appended, and a retry would be refused).
    assert out.code == 0, out.stderr
    assert json.loads(out.stdout)["version"] == 4
    assert (folder / "2026-11-04.csv").read_bytes() == batch.read_bytes()
    listed = versions_cli(capsys, home)  # listing pins it now that nobody else is pinning
    assert listed.code == 0, listed.stderr
    pinned = json.loads(ledger_path(Home(home), "folder").read_text())["files"]
    assert [f["name"] for f in pinned][-1] == "2026-11-04.csv"
