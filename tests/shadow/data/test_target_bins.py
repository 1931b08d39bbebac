"""A class target cut from a numeric column (``[target_bins]``): the manifest's rules, the
bins' edges, the table checks, and that appended batches and a backtest's copy are cut the
same way as the catalog's file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from selection.home import Home
from shadow.data.append import append_batch
from shadow.data.history import full_table, write_prefix
from shadow.data.loader import load_dataset, read_table
from shadow.data.manifest import DatasetManifest
from shadow.data.target_bins import TargetBins
from shadow.errors import ConfigError, DatasetError
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot

BINS = {"column": "r", "edges": [0.0], "labels": ["down", "up"]}
BASE: dict[str, Any] = {"name": "toy", "target": "direction", "features": ["a", "b"],
                        "time_column": "t", "source": {"kind": "csv", "path": "toy.csv"}}


def _manifest(tmp_path: Path, bins: Any = None, **top: Any) -> DatasetManifest:
    raw = {**BASE, **top, "target_bins": BINS if bins is None else bins}
    return DatasetManifest.from_dict(raw, tmp_path / "dataset.toml")


def _frame(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, n))
    return pd.DataFrame({"t": np.arange(start, start + n), "a": a, "b": b, "r": a + b})


def test_a_value_on_an_edge_falls_in_the_bin_below() -> None:
    bins = TargetBins("r", (-1.0, 0.0, 2.5), ("low", "mid", "high", "top"))
    values = np.array([-5.0, -1.0, -0.5, 0.0, 1e-9, 2.5, 3.0])
    assert bins.classify(values).tolist() == ["low", "low", "mid", "mid", "high", "high", "top"]


def test_a_csv_dataset_gets_its_classes_from_the_column(tmp_path: Path) -> None:
    frame = _frame(120)
    frame.loc[5, "r"] = 0.0  # a flat value is "down": only a rise is "up"
    frame.to_csv(tmp_path / "toy.csv", index=False)
    manifest = _manifest(tmp_path)
    ds = load_dataset(manifest)
    assert ds.classes == ("down", "up") and ds.feature_names == ("a", "b")
    expected = (frame["r"] > 0).to_numpy().astype(np.int64)
    assert ds.labels.tolist() == expected.tolist() and ds.labels[5] == 0
    # The column the labels come from is never among the model's inputs.
    assert np.array_equal(ds.features, frame[["a", "b"]].to_numpy(np.float32))


def test_appended_batches_carry_the_column_and_are_cut_by_the_same_rule(tmp_path: Path) -> None:
    _frame(100).to_csv(tmp_path / "toy.csv", index=False)
    manifest = _manifest(tmp_path)
    batch = _frame(40, start=100, seed=1)
    batch.to_csv(tmp_path / "batch.csv", index=False)
    home = Home(tmp_path / "home")
    append_batch(manifest, tmp_path / "batch.csv", home)
    grown = load_dataset(manifest, home)
    assert grown.n_rows == 140
    assert grown.labels[100:].tolist() == (batch["r"] > 0).astype(int).tolist()
    # A batch that already holds the class column would be cut over: refused, nothing kept.
    batch.assign(t=batch["t"] + 40, direction="up").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="already has a column 'direction'.*drop 'direction' "
                       "from the batch"):
        append_batch(manifest, tmp_path / "bad.csv", home)
    assert load_dataset(manifest, home).n_rows == 140


def test_a_backtests_copy_holds_the_classes_and_not_the_column(tmp_path: Path) -> None:
    _frame(120).to_csv(tmp_path / "toy.csv", index=False)
    manifest = _manifest(tmp_path)
    table = full_table(manifest)
    assert "r" not in table.columns and set(table["direction"]) == {"down", "up"}
    copy = DatasetManifest.from_file(write_prefix(manifest, table, 80, tmp_path / "cut"))
    assert copy.target_bins is None and copy.target == "direction"
    assert load_dataset(copy).labels.tolist() == load_dataset(manifest).labels[:80].tolist()


@pytest.mark.parametrize("bins, top, message", [
    ({**BINS, "column": "a"}, {}, "'a' is also a feature, so the model would be shown its own label"),
    ({**BINS, "column": "direction"}, {}, "is also the manifest's 'target'"),
    ({**BINS, "column": "s"}, {"segment_columns": ["s"]}, "is also a segment column"),
    ({**BINS, "column": ""}, {}, "'column' must name the numeric column"),
    ({**BINS, "edges": []}, {}, "'edges' must be 1 to 63 finite numbers"),
    ({**BINS, "edges": [0.0, float("nan")]}, {}, "'edges' must be 1 to 63 finite numbers"),
    ({**BINS, "edges": [True]}, {}, "'edges' must be 1 to 63 finite numbers"),
    ({**BINS, "edges": ["0"]}, {}, "'edges' must be 1 to 63 finite numbers"),
    ({**BINS, "edges": [1.0, 0.0, 2.0]}, {}, "'edges' must rise strictly"),
    ({**BINS, "edges": [0.0, 0.0]}, {}, "'edges' must rise strictly"),
    ({**BINS, "labels": ["down"]}, {}, "1 edge make 2 classes, so 'labels' needs 2 names; got 1"),
    ({**BINS, "labels": ["down", "down"]}, {}, "'labels' names a class twice"),
    ({**BINS, "labels": ["down", ""]}, {}, "'labels' must be non-empty strings"),
    ({**BINS, "labels": ["down", 1]}, {}, "'labels' must be non-empty strings"),
    ({**BINS, "edge": [0.0]}, {}, "unknown key 'edge'"),
    ({"column": "r", "labels": ["down", "up"]}, {}, "missing required key 'edges'"),
    ("r > 0", {}, "must be a table"),
    (BINS, {"source": {"kind": "sql", "url": "sqlite:///x.db", "table": "t", "order_by": "t"}},
     "derived targets work on package and csv sources, not kind = 'sql'"),
])
def test_bad_bins_are_one_line_naming_the_fix(tmp_path: Path, bins: Any, top: dict[str, Any],
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        _manifest(tmp_path, bins, **top)
    text = str(info.value)
    assert message in text and "\n" not in text and "[target_bins]" in text


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="r"), "column 'r' ([target_bins] column) is not in the table"),
    (lambda f: f.assign(r="x"), "column 'r' ([target_bins] column) is not numeric"),
    (lambda f: f.assign(r=f["r"].where(f.index != 7)), "has 1 missing or infinite value (first at row 7)"),
    (lambda f: f.assign(r=f["r"].where(f.index != 3, np.inf)), "(first at row 3)"),
    (lambda f: f.assign(direction="up"), "already has a column 'direction'"),
])
def test_a_table_the_bins_cannot_cut_is_refused(tmp_path: Path, change: Any, message: str) -> None:
    change(_frame(60)).to_csv(tmp_path / "toy.csv", index=False)
    with pytest.raises(DatasetError) as info:
        read_table(_manifest(tmp_path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_cli_appends_a_batch_and_refuses_one_without_the_column_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    entry = tmp_path / "catalog" / "toy"
    entry.mkdir(parents=True)
    _frame(100).to_csv(entry / "toy.csv", index=False)
    bins = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in BINS.items())
    (entry / "dataset.toml").write_text(
        'name = "toy"\ntarget = "direction"\nfeatures = ["a", "b"]\ntime_column = "t"\n'
        f'[source]\nkind = "csv"\npath = "toy.csv"\n[target_bins]\n{bins}\n')
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    home = tmp_path / "home"
    _frame(30, start=100, seed=1).to_csv(tmp_path / "good.csv", index=False)
    assert run_cli(capsys, "data", "append", "toy", str(tmp_path / "good.csv"), "--home",
                   str(home)).code == 0
    before = snapshot(home)
    _frame(30, start=130, seed=2).drop(columns="r").to_csv(tmp_path / "bad.csv", index=False)
    outcome = run_cli(capsys, "data", "append", "toy", str(tmp_path / "bad.csv"), "--home", str(home))
    assert_user_error(outcome, "column 'r' ([target_bins] column) is not in the table")
    assert snapshot(home) == before
