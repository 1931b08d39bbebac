"""Bad growing sources (a folder of batch files, a SQL table) through `shadow sweep run`.

The corpus's contract: exit 2, one line on stderr naming the problem, no
traceback, and the prepared home (every row, every file) exactly as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from selection.home import Home
from shadow.data.catalog import find_manifest
from shadow.data.loader import load_dataset, record_version
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.shadow.data.test_directory_source import timed_frame

PG = "postgresql://postgres@127.0.0.1:5432/test"
FOLDER_TOML = ('name = "grows"\ntarget = "label"\nfeatures = ["x0", "x1"]\ntime_column = "t"\n'
               '[source]\nkind = "directory"\npath = "incoming"\n')


def folder_dataset(root: Path, source_extra: str = "", files: int = 2) -> Path:
    """``root/grows/dataset.toml`` over ``root/grows/incoming`` with ``files`` good batches."""
    entry = root / "grows"
    (entry / "incoming").mkdir(parents=True)
    for i in range(files):
        timed_frame(100, 100 * i, seed=i).to_csv(entry / "incoming" / f"{i:04d}.csv", index=False)
    (entry / "dataset.toml").write_text(FOLDER_TOML + source_extra)
    return entry / "dataset.toml"


def sweep_file(tmp_path: Path, dataset: Path | str) -> Path:
    config = tmp_path / "sweep.toml"
    config.write_text(f'[sweep]\ndataset = "{dataset}"\n[holdout]\nrows = 40\n'
                      '[[slices]]\nstrategy = "all"\n[model]\nfamily = "mlp"\n'
                      '[model.params]\nepochs = 1\n')
    return config


def _text(path: Path, text: str) -> None:
    path.write_text(text)


#: Each: what to do to a good folder dataset (its dataset.toml given), and the line's fragments.
FOLDER_CASES: dict[str, tuple[Callable[[Path], object], list[str]]] = {
    "folder-missing": (lambda m: (m.parent / "incoming").rename(m.parent / "elsewhere"),
                       ["batch folder", "does not exist", "fix [source] path"]),
    "folder-non-batch-file": (lambda m: _text(m.parent / "incoming/notes.txt", "x"),
                              ["'notes.txt'", "not a batch file", "pattern"]),
    "folder-empty-batch": (lambda m: _text(m.parent / "incoming/0002.csv", "t,x0,x1,label\n"),
                           ["'0002.csv'", "has no rows"]),
    "folder-time-backwards": (lambda m: timed_frame(10, 5).to_csv(m.parent / "incoming/0002.csv",
                                                                  index=False),
                              ["'0002.csv'", "time goes backwards"]),
    "folder-nan": (lambda m: _text(m.parent / "incoming/0002.csv", "t,x0,x1,label\n300,,1,0\n"),
                   ["'0002.csv'", "missing value"]),
    "folder-unknown-key": (lambda m: _text(m, m.read_text() + 'recursive = true\n'),
                           ["unknown key 'recursive'", "known keys: kind, path, pattern, index_col"]),
    "folder-bad-pattern": (lambda m: _text(m, m.read_text() + 'pattern = "sub/*.csv"\n'),
                           ["'pattern' must be a glob over file names"]),
    "source-unknown-kind": (lambda m: _text(m, m.read_text().replace('"directory"', '"folder"')),
                            ["'kind' must be one of", "'directory', 'sql'"]),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_bad_folder_source(case: str, prepared: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    change, fragments = FOLDER_CASES[case]
    manifest = folder_dataset(tmp_path / "catalog")
    change(manifest)
    before = snapshot(prepared)
    result = run_cli(capsys, "sweep", "run", str(sweep_file(tmp_path, manifest)),
                     "--home", str(prepared), "--quiet")
    assert_user_error(result, *fragments)
    assert snapshot(prepared) == before


@pytest.mark.parametrize("change", ["edit", "insert-before"])
def test_an_edited_or_preceded_recorded_batch(change: str, home_copy: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    manifest = folder_dataset(tmp_path / "catalog")
    record_version(load_dataset(find_manifest(str(manifest)), Home(home_copy)), Home(home_copy))
    incoming = manifest.parent / "incoming"
    if change == "edit":
        frame = pd.read_csv(incoming / "0000.csv")
        frame.loc[0, "label"] = 1 - frame.loc[0, "label"]
        frame.to_csv(incoming / "0000.csv", index=False)
        fragments = ["'0000.csv'", "changed since version 1 was recorded", "restore it"]
    else:
        timed_frame(10, -20).to_csv(incoming / "0000-early.csv", index=False)
        fragments = ["'0000-early.csv'", "sorts before '0000.csv'", "rename it"]
    before = snapshot(home_copy)
    result = run_cli(capsys, "sweep", "run", str(sweep_file(tmp_path, manifest)),
                     "--home", str(home_copy), "--quiet")
    assert_user_error(result, *fragments)
    assert snapshot(home_copy) == before


def test_unknown_data_version(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    manifest = folder_dataset(tmp_path / "catalog")
    before = snapshot(prepared)
    for wanted, fragment in (("3", "no version '3'"), ("abc", "no version 'abc'")):
        result = run_cli(capsys, "sweep", "run", str(sweep_file(tmp_path, manifest)), "--home",
                         str(prepared), "--data-version", wanted, "--quiet")
        assert_user_error(result, fragment, "versions 1-2")
    assert snapshot(prepared) == before


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A real table of 200 good rows under a unique name, dropped afterwards."""
    engine = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"shadow_bad_{uuid.uuid4().hex[:12]}"
    try:
        timed_frame(200).to_sql(name, engine, index=False)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); `.ci/run` starts it")
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


SQL_CASES: dict[str, tuple[dict[str, str | None], list[str]]] = {
    "sql-cannot-connect": ({"url": "postgresql://postgres@127.0.0.1:1/test"},
                           ["cannot read table", "127.0.0.1:1", "database is running"]),
    "sql-not-a-url": ({"url": "not a url"}, ["[source] url is not a database URL"]),
    "sql-missing-order-column": ({"order_by": "arrived"},
                                 ["order_by column 'arrived' is not in table", "'t', 'x0'"]),
    "sql-missing-table": ({"table": "no_such_table"}, ["table 'no_such_table' does not exist"]),
    "sql-unknown-key": ({"extra": 'where = "t > 5"'}, ["unknown key 'where'",
                                                     "known keys: kind, url, table, order_by"]),
    "sql-missing-order-key": ({"order_by": None}, ["missing required key 'order_by'"]),
}


@pytest.mark.parametrize("case", sorted(SQL_CASES))
def test_bad_sql_source(case: str, pg_table: str, prepared: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    change, fragments = SQL_CASES[case]
    keys = {"url": PG, "table": pg_table, "order_by": "t", **change}
    lines = [f'{k} = "{v}"' for k, v in keys.items() if k != "extra" and v is not None]
    entry = tmp_path / "catalog/pgbad"
    entry.mkdir(parents=True)
    (entry / "dataset.toml").write_text(
        'name = "pgbad"\ntarget = "label"\nfeatures = ["x0", "x1"]\n[source]\nkind = "sql"\n'
        + "\n".join(lines) + "\n" + (keys.get("extra") or "") + "\n")
    before = snapshot(prepared)
    result = run_cli(capsys, "sweep", "run", str(sweep_file(tmp_path, entry / "dataset.toml")),
                     "--home", str(prepared), "--quiet")
    assert_user_error(result, *fragments)
    assert snapshot(prepared) == before
