"""Optuna per slice: config validation, and a real searched sweep on Ray that is reproducible."""

from __future__ import annotations

import json

import pytest

from selection.store import Store
from shadow.cli.main import main
from shadow.errors import ConfigError
from shadow.sweep.config import config_from_dict

BASE = {
    "sweep": {"dataset": "noaa-weather", "seed": 5},
    "holdout": {"rows": 365},
    "slices": [{"strategy": "recent", "rows": 730}, {"strategy": "recent", "rows": 2000}],
    "model": {"family": "mlp", "params": {"epochs": 2, "hidden_layers": 1}},
}


def with_search(**search) -> dict:
    space = search.pop("space", {"width": {"low": 4, "high": 32}, "lr": {"low": 1e-3, "high": 0.1, "log": True}})
    return {**BASE, "search": {"trials": 4, "parallel": 2, "space": space, **search}}


def test_search_space_is_checked_against_the_family():
    config = config_from_dict(with_search())
    assert config.search is not None and config.search.trials == 4
    assert set(config.search.space) == {"width", "lr"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (with_search(space={"depth": {"low": 1, "high": 3}}), r"'depth': not a parameter of family 'mlp'"),
        (with_search(space={"epochs": {"low": 1, "high": 3}}), r"also fixed in \[model.params\]"),
        (with_search(space={"width": {"low": 0, "high": 3}}),
         r"'width' must be an int in the range \[1, 8192\]; got 0"),
        (with_search(space={"width": {"low": 9, "high": 3}}), r"'low' \(9\) must be below 'high' \(3\)"),
        (with_search(space={"lr": {"low": 0.1}}), r"needs 'low' and 'high'"),
        (with_search(space={}), r"\[search.space\] is empty"),
        (with_search(sampler="cmaes"), r"'sampler' must be one of 'tpe', 'random'"),
        ({**with_search(), "model": {"family": "mlp", "params": {"epochs": [1, 2]}}},
         r"'epochs' list several values, but \[search\] is set"),
    ],
)
def test_bad_search_tables(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def write_config(path, raw: dict) -> None:
    lines = ["[sweep]", 'dataset = "noaa-weather"', "seed = 5", "[holdout]", "rows = 365"]
    for piece in raw["slices"]:
        lines += ["[[slices]]", 'strategy = "recent"', f"rows = {piece['rows']}"]
    lines += ["[model]", 'family = "mlp"', "[model.params]", "epochs = 2", "hidden_layers = 1",
              "[search]", "trials = 4", "parallel = 2", "[search.space]",
              "width = { low = 4, high = 32 }", "lr = { low = 0.001, high = 0.1, log = true }"]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.integration
@pytest.mark.slow
def test_searched_sweep_runs_trials_per_slice_and_is_reproducible(tmp_path, ray_local, capsys):
    config = tmp_path / "search.toml"
    write_config(config, BASE)
    runs = []
    for name in ("a", "b"):
        home = tmp_path / name
        assert main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert (summary["planned"], summary["ok"]) == (8, 8)
        with Store.open(home, create=False) as store:
            records = store.list_candidates(summary["sweep_id"])
        runs.append(sorted(
            (r.slice_id, r.lineage["trial"], r.params["width"], round(r.params["lr"], 12)) for r in records
        ))
        for record in records:
            assert 0.0 <= record.lineage["validation_accuracy"] <= 1.0
            assert record.lineage["validation_rows"] + record.lineage["train_rows"] == record.lineage["slice_rows"]
    first, second = runs
    assert first == second  # same seed, same trials, whatever order tasks finished in
    per_slice = {}
    for slice_id, trial, _width, _lr in first:
        per_slice.setdefault(slice_id, []).append(trial)
    assert per_slice == {"recent-730": [0, 1, 2, 3], "recent-2000": [0, 1, 2, 3]}
    assert len({(w, lr) for _, _, w, lr in first}) > 2  # the sampler explored


def test_resume_replays_stored_trials_and_keeps_the_budget():
    from selection.records import CandidateRecord
    from shadow.data.slicing.base import build_strategy
    from shadow.models import get_family
    from shadow.sweep.search import SearchPlanner

    config = config_from_dict(with_search())
    slices = build_strategy({"strategy": "recent", "rows": 100}, "t").slices(500, {}) + \
        build_strategy({"strategy": "recent", "rows": 200}, "t").slices(500, {})

    def planner(stored=()):
        return SearchPlanner(config.search, slices, "mlp", dict(config.fixed_params), get_family("mlp"),
                             "s-1", "fp", 5, list(stored))

    first = planner()
    generation = first.ready()
    assert [(s.slice_id, s.trial) for s in generation] == [
        ("recent-100", 0), ("recent-100", 1), ("recent-200", 0), ("recent-200", 1)]
    assert first.ready() == []  # the next generation waits for this one to be told

    def record(spec, status="ok", value=0.7):
        lineage = {"trial": spec.trial, "validation_accuracy": value} if status == "ok" else {"trial": spec.trial}
        return CandidateRecord(spec.candidate_id, "s-1", spec.slice_id, "mlp", spec.params, 5, status,
                               lineage=lineage)

    # Stored before the crash: both trials of recent-100's first generation, one of them failed.
    stored = [record(generation[0]), record(generation[1], status="failed")]
    resumed = planner(stored)
    assert len(resumed.studies["recent-100"].trials) == 2
    again = resumed.ready()
    assert [(s.slice_id, s.trial) for s in again] == [
        ("recent-100", 2), ("recent-100", 3), ("recent-200", 0), ("recent-200", 1)]
    # Same sweep, slice, params and trial index -> the same candidate id as the first run.
    assert again[2].candidate_id == generation[2].candidate_id
    for spec in again:
        resumed.tell(spec, record(spec))
    assert [s.slice_id for s in resumed.ready()] == ["recent-200", "recent-200"]  # recent-100 used its 4
