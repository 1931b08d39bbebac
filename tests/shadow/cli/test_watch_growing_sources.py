"""The loop's controller over sources that grow where the user keeps them (`shadow watch --once`).

The controller loads data with ``load_dataset(manifest, home)`` and knows
nothing of folders or tables: a new file dropped in the folder, or new rows
inserted into the PostgreSQL table, must be the next data version it sweeps,
and the version each sweep trained on must end up pinned in the home.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from selection.home import Home
from selection.store import Store
from shadow.data.catalog import find_manifest
from shadow.data.directory_ledger import ledger_path as folder_ledger
from shadow.data.loader import load_dataset
from shadow.data.sql_source import ledger_path as sql_ledger
from tests.bad_inputs.contract import run_cli
from tests.shadow.data.test_directory_source import timed_frame, write_directory_dataset
from tests.shadow.data.test_sql_source import PG, write_sql_dataset

pytestmark = [pytest.mark.slow]

SWEEP = """\
[sweep]
name = "watched"
dataset = "{dataset}"
seed = 1

[holdout]
rows = 40

[[slices]]
strategy = "all"

[model]
family = "mlp"

[model.params]
width = [4]
epochs = 2

[watch]
channel = "production"
mode = "auto"

[watch.triggers]
new_rows = 50
"""


def watch(capsys: pytest.CaptureFixture[str], config: Path, home: Path) -> dict:
    outcome = run_cli(capsys, "watch", str(config), "--once", "--home", str(home),
                      "--format", "json")
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def sweeps_on(home: Path) -> list[str]:
    with Store.open(home, create=False) as store:
        return [s.dataset_fingerprint for s in reversed(store.list_sweeps())]


def test_a_file_dropped_in_the_folder_is_the_next_version_the_controller_sweeps(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str],
) -> None:
    incoming = write_directory_dataset(tmp_path / "catalog")
    timed_frame(150, 0, seed=1).to_csv(incoming / "0001.csv", index=False)
    timed_frame(150, 150, seed=2).to_parquet(incoming / "0002.parquet")
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=incoming.parent / "dataset.toml"))
    home = tmp_path / "home"

    first = watch(capsys, config, home)
    assert first["action"] == "swept" and first["rows"] == 300
    timed_frame(60, 300, seed=3).to_csv(incoming / "0003.csv", index=False)
    second = watch(capsys, config, home)
    assert second["action"] == "swept" and second["rows"] == 360
    assert second["fired"][0]["evidence"]["new_rows"] == 60
    manifest = find_manifest(str(incoming.parent / "dataset.toml"))
    assert second["data_version"] == load_dataset(manifest, Home(home)).fingerprint
    assert sweeps_on(home) == [first["data_version"], second["data_version"]]
    pinned = json.loads(folder_ledger(Home(home), "folder").read_text())["files"]
    assert [f["name"] for f in pinned] == ["0001.csv", "0002.parquet", "0003.csv"]


@pytest.fixture
def table() -> Iterator[tuple[str, sa.Engine]]:
    engine = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"shadow_watch_{uuid.uuid4().hex[:12]}"
    timed_frame(300, 0, seed=1).to_sql(name, engine, index=False)
    try:
        yield name, engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_rows_inserted_into_the_table_are_the_next_version_the_controller_sweeps(
    table: tuple[str, sa.Engine], tmp_path: Path, ray_local: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, engine = table
    manifest_path = write_sql_dataset(tmp_path / "catalog", name)
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=manifest_path))
    home = tmp_path / "home"

    first = watch(capsys, config, home)
    assert first["action"] == "swept" and first["rows"] == 300
    timed_frame(60, 300, seed=3).to_sql(name, engine, index=False, if_exists="append")
    second = watch(capsys, config, home)
    assert second["action"] == "swept" and second["rows"] == 360
    assert sweeps_on(home) == [first["data_version"], second["data_version"]]
    recorded = json.loads(sql_ledger(Home(home), "pg").read_text())["versions"]
    assert [(v["version"], v["rows"], v["watermark"]) for v in recorded] == [(1, 300, "299"),
                                                                             (2, 360, "359")]
    assert [v["fingerprint"] for v in recorded] == sweeps_on(home)
