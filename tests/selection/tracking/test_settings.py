"""The [mlflow] table and where a tracking URI comes from (no server needed)."""

from __future__ import annotations

import pytest

from selection.errors import ConfigError
from selection.tracking.settings import MlflowSettings, resolve, settings_from_config


def test_the_flag_beats_the_table_which_beats_the_environment():
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    table = {"tracking_uri": "http://127.0.0.1:2", "experiment": "exp"}
    assert resolve(table, override="http://127.0.0.1:3", environ=env) == MlflowSettings(
        "http://127.0.0.1:3", "exp")
    assert resolve(table, environ=env).tracking_uri == "http://127.0.0.1:2"
    assert resolve({"experiment": "exp"}, environ=env) == MlflowSettings("http://127.0.0.1:1", "exp")
    assert resolve(None, environ={}) is None


def test_defaults_name_the_experiment_after_the_sweep_and_the_model_after_dataset_and_channel():
    settings = MlflowSettings("http://127.0.0.1:5000")
    assert settings.experiment_for("noaa-demo") == "noaa-demo"
    assert settings.model_name_for("noaa-weather", "production") == "noaa-weather-production"
    assert MlflowSettings("http://x", registered_model="m").model_name_for("d", "c") == "m"


@pytest.mark.parametrize(("table", "message"), [
    ({"tracking_url": "http://127.0.0.1:5000"}, "unknown key 'tracking_url'; known keys: tracking_uri"),
    ({"tracking_uri": "127.0.0.1:5000"}, "must start with one of http:"),
    ({"tracking_uri": "http://bob:secret@127.0.0.1:5000"}, "must not hold a user name or password"),
    ({"tracking_uri": 5000}, "'tracking_uri' must be a str"),
    ({"experiment": "a/b"}, "'experiment' must be 1-200 printable characters"),
])
def test_a_bad_table_is_one_message_naming_the_key_and_the_fix(table, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        settings_from_config(table, "sweep.toml [mlflow]")


def test_tracking_off_ignores_the_environment_but_not_the_flag():
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    assert resolve({"enabled": False}, environ=env) is None
    assert resolve(settings_from_config({"enabled": False}, "[mlflow]"), environ=env) is None
    assert resolve({"enabled": False}, override="http://127.0.0.1:3", environ=env).tracking_uri == (
        "http://127.0.0.1:3")
    with pytest.raises(ConfigError, match="enabled = false"):
        settings_from_config({"enabled": False, "tracking_uri": "http://127.0.0.1:2"}, "[mlflow]")


def test_the_backtest_turns_tracking_off_even_with_the_environment_set(tmp_path, monkeypatch):
    from shadow.loop.backtest.plan import BacktestSettings
    from shadow.loop.backtest.runner import backtest_config
    from shadow.sweep.config import config_from_dict

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    raw = {"sweep": {"name": "bt", "dataset": str(tmp_path / "d.toml")}, "holdout": {"rows": 10},
           "slices": [{"strategy": "all"}], "model": {"family": "mlp"}}
    for table in (None, {"tracking_uri": "http://127.0.0.1:2", "registered_model": "team"}):
        given = config_from_dict({**raw, **({"mlflow": table} if table else {})}, tmp_path / "s.toml")
        config, notes = backtest_config(given, tmp_path / "d.toml", BacktestSettings(period=10))
        assert config.raw["mlflow"] == {"enabled": False}  # stored with each of its sweeps
        assert resolve(config.mlflow) is None
        assert any("MLflow tracking off" in note for note in notes)
