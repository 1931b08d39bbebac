"""Bad input through the real command: one line on stderr, exit 2, no traceback,
and nothing already stored is lost or changed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

# The contract's assertions live with the bad-input corpus, which uses them too.
from tests.bad_inputs.contract import REPO, assert_user_error, shadow, snapshot
from tests.shadow.conftest import separable_frame, write_dataset

pytestmark = pytest.mark.integration


def config_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "sweep.toml"
    path.write_text(body)
    return str(path)


GOOD = """
[sweep]
dataset = "noaa-weather"
[holdout]
rows = 365
[[slices]]
strategy = "recent"
rows = 730
[model]
family = "mlp"
"""


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (GOOD.replace('"noaa-weather"', '"noaa-wether"'),
         ["unknown dataset 'noaa-wether'", "noaa-weather", "shadow datasets"]),
        (GOOD.replace("[holdout]", "[holdout"), ["is not valid TOML"]),
        (GOOD.replace("rows = 365", "rows = 365\nshuffle = true"), ["unknown key 'shuffle'", "known keys: rows"]),
        (GOOD.replace('family = "mlp"', 'family = "mlp"\n[model.params]\nwidht = 3'),
         ["unknown key 'widht'", "known keys: hidden_layers, width"]),
        (GOOD.replace('dataset = "noaa-weather"', 'dataset = "noaa-weather"\ndevices = ["npu"]'),
         ["unknown device 'npu'", "host-cpu"]),
    ],
    ids=["unknown-dataset", "malformed-toml", "unknown-holdout-key", "unknown-param", "unknown-device"],
)
def test_bad_sweep_config(tmp_path, swept, body, fragments):
    home, _ = swept
    before = snapshot(home)
    result = shadow("sweep", "run", config_file(tmp_path, body), "--home", str(home))
    assert_user_error(result, *fragments)
    assert snapshot(home) == before


def test_missing_target_column(tmp_path, swept):
    home, _ = swept
    frame = separable_frame().rename(columns={"label": "outcome"})
    manifest = write_dataset(tmp_path / "catalog", frame, name="renamed", target="label",
                             features=["x0", "x1"])
    body = GOOD.replace('"noaa-weather"', f'"{manifest}"').replace("365", "100").replace("730", "100")
    before = snapshot(home)
    result = shadow("sweep", "run", config_file(tmp_path, body), "--home", str(home))
    assert_user_error(result, "column 'label' not in the table", "'outcome'")
    assert snapshot(home) == before


def test_missing_config_file(swept):
    home, _ = swept
    assert_user_error(shadow("sweep", "run", "no/such.toml", "--home", str(home)), "does not exist")


def test_unknown_candidate(swept):
    home, _ = swept
    before = snapshot(home)
    result = shadow("promote", "c-000000000000", "--home", str(home))
    assert_user_error(result, "c-000000000000", "shadow leaderboard")
    assert snapshot(home) == before


def test_unknown_sweep_in_leaderboard(swept):
    home, _ = swept
    assert_user_error(shadow("leaderboard", "--sweep", "s-nope", "--home", str(home)), "s-nope")


def test_read_only_verbs_do_not_create_a_home(tmp_path):
    missing = tmp_path / "nowhere"
    assert_user_error(shadow("leaderboard", "--home", str(missing)), str(missing))
    assert_user_error(shadow("history", "--home", str(missing)), str(missing))
    assert not missing.exists()


def test_bad_flags_are_one_line_too(swept):
    home, _ = swept
    assert_user_error(shadow("leaderboard", "--top", "0", "--home", str(home)), "--top", "must be an int >= 1")
    assert_user_error(shadow("promote", "--home", str(home)), "one of the arguments")
    assert_user_error(shadow("leaderboard", "--format", "xml"), "invalid choice: 'xml'")


def test_json_listing_is_alone_on_stdout(swept):
    import json

    home, _ = swept
    result = shadow("leaderboard", "--home", str(home), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows and {"candidate_id", "sweep_id", "slice_id", "family", "params", "device", "status",
                     "accuracy", "latency_ms", "size_bytes", "rank"} <= set(rows[0])


def test_unreachable_cluster_fails_fast_and_stores_nothing(tmp_path, swept):
    home, _ = swept
    before = snapshot(home)
    started = time.monotonic()
    result = shadow("sweep", "run", config_file(tmp_path, GOOD), "--home", str(home),
                    "--address", "127.0.0.1:1")
    assert_user_error(result, "cannot connect to the Ray cluster at '127.0.0.1:1'")
    assert time.monotonic() - started < 30
    assert snapshot(home) == before


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (GOOD.replace('"noaa-weather"', '"noaa-weather"\ndevices = [["host-cpu"]]'), ["'devices' must list"]),
        (GOOD.replace("[model.params]", "").replace('family = "mlp"', 'family = "mlp"\n[model.params]\nwidth = [8, 8]'),
         ["'width' lists a value twice"]),
        (GOOD.replace('"noaa-weather"', f'"{REPO / "datasets" / "noaa-weather"}"'), ["is a folder"]),
    ],
    ids=["devices-nested-list", "duplicate-grid-value", "dataset-folder"],
)
def test_more_bad_configs(tmp_path, body, fragments):
    assert_user_error(shadow("sweep", "run", config_file(tmp_path, body), "--home", str(tmp_path / "h")),
                      *fragments)
    assert not (tmp_path / "h").exists()


def test_a_store_that_is_not_a_store_is_one_line(tmp_path):
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello")
    assert_user_error(shadow("leaderboard", "--store", f"sqlite:///{not_a_db}"), "file is not a database")
    assert_user_error(shadow("history", "--home", str(not_a_db)), str(not_a_db))
    assert_user_error(shadow("sweep", "list", "--store", "postgresql://postgres@127.0.0.1:5432/no_such_db"),
                      "cannot open the store", "no_such_db")
    assert not_a_db.read_text() == "hello"
