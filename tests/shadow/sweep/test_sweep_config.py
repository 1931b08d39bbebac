from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.sweep.config import config_from_dict, expand_grid, load_config
from shadow.sweep.plan import plan_candidates
from shadow.sweep.runner import prepare_sweep


def minimal(**overrides) -> dict:
    raw = {
        "sweep": {"dataset": "toy"},
        "holdout": {"rows": 100},
        "slices": [{"strategy": "all"}, {"strategy": "recent", "rows": 100}],
        "model": {"family": "mlp", "params": {"width": [4, 8], "epochs": 2}},
    }
    raw.update(overrides)
    return raw


def test_demo_config_is_valid():
    config = load_config(Path(__file__).parents[3] / "datasets/noaa-weather/sweep.toml")
    assert config.dataset == "noaa-weather" and config.devices == ("host-cpu", "snapdragon-8-gen-2-htp")
    assert len(config.grid) == 2


def test_grid_expands_lists_and_fills_defaults():
    config = config_from_dict(minimal())
    assert [p["width"] for p in config.grid] == [4, 8]
    assert all(p["epochs"] == 2 and p["hidden_layers"] == 2 for p in config.grid)
    assert expand_grid({"a": [1, 2], "b": ["x", "y"], "c": 0}) == [
        {"a": 1, "b": "x", "c": 0}, {"a": 1, "b": "y", "c": 0},
        {"a": 2, "b": "x", "c": 0}, {"a": 2, "b": "y", "c": 0},
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (minimal(extra={}), r"unknown key 'extra'"),
        (minimal(sweep={"dataset": "toy", "devise": ["host-cpu"]}), r"unknown key 'devise'"),
        (minimal(sweep={"dataset": "toy", "devices": ["tpu-9000"]}), r"unknown device 'tpu-9000'; known: .*host-cpu"),
        (minimal(model={"family": "gbm"}), r"unknown model family 'gbm'; known: cnn, mlp"),
        (minimal(model={"family": "mlp", "params": {"widht": 3}}), r"unknown key 'widht'"),
        (minimal(model={"family": "mlp", "params": {"lr": -1.0}}), r"'lr' must be a float in the range \(0, 1\]"),
        (minimal(model={"family": "mlp", "params": {"width": []}}), r"'width' is an empty list"),
        (minimal(slices=[]), r"at least one slice strategy"),
        ({"sweep": {"dataset": "toy"}}, r"missing \[holdout\] section"),
        (minimal(ranking={"bogus": 1}), r"\[ranking\]: unknown key 'bogus'; known keys: policy"),
        (minimal(gate={"alpha": 5}), r"alpha must be a number in \(0, 1\); got 5"),
    ],
)
def test_bad_configs_are_refused_with_the_fix(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_ranking_and_gate_tables_are_kept_for_selection():
    config = config_from_dict(minimal(ranking={"max_latency_ms": 2.0}, gate={"alpha": 0.01}))
    assert config.raw["ranking"] == {"max_latency_ms": 2.0} and config.raw["gate"] == {"alpha": 0.01}


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)


def test_candidate_ids_are_deterministic_and_distinct(toy_catalog):
    config = config_from_dict(minimal())
    a = prepare_sweep(config, sweep_id="s-1")
    b = prepare_sweep(config, sweep_id="s-1")
    ids = [c.candidate_id for c in a.candidates]
    assert ids == [c.candidate_id for c in b.candidates]
    assert len(set(ids)) == len(ids) == 4
    other = plan_candidates("s-2", a.dataset.fingerprint, a.slices, "mlp", config.grid, 0)
    assert not set(ids) & {c.candidate_id for c in other}
