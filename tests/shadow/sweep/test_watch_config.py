"""The ``[watch]`` table: validated like the rest of the sweep file, one line per mistake."""

import tomllib
from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.sweep.config import config_from_dict, load_config
from shadow.sweep.watch_config import (
    TRIGGER_KEYS,
    SignificantDrop,
    WatchConfig,
    WatchTriggers,
    watch_from_config,
)

DATASETS = Path(__file__).parents[3] / "datasets"

WATCH_TOML = """
[watch]
channel = "canary-eu"
mode = "auto"
refit = true
poll_s = 2.5

[watch.triggers]
new_rows = 365
schedule_s = 86400
min_accuracy = 0.7
drift = true
config_changed = true

[watch.triggers.significant_drop]
alpha = 0.02
min_rows = 50
"""


def test_real_sweep_file_with_a_watch_table_loads(tmp_path):
    text = (DATASETS / "noaa-weather/sweep.toml").read_text(encoding="utf-8") + WATCH_TOML
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert config.dataset == "noaa-weather"
    assert config.watch == WatchConfig(
        triggers=WatchTriggers(new_rows=365, schedule_s=86400.0, min_accuracy=0.7,
                               significant_drop=SignificantDrop(alpha=0.02, min_rows=50),
                               drift=True, config_changed=True),
        channel="canary-eu", mode="auto", refit=True, poll_s=2.5,
    )
    assert config.watch.triggers.enabled() == TRIGGER_KEYS
    assert config.watch.as_dict()["triggers"]["significant_drop"] == {"alpha": 0.02, "min_rows": 50}


@pytest.mark.parametrize("name", ["noaa-weather", "digits", "fashion-mnist"])
def test_sweep_files_without_watch_are_unchanged(name):
    config = load_config(DATASETS / name / "sweep.toml")
    assert config.watch is None
    assert "watch" not in config.raw


def test_defaults_and_a_single_trigger():
    watch = watch_from_config({"triggers": {"new_rows": 1}})
    assert (watch.channel, watch.mode, watch.refit, watch.poll_s) == ("production", "propose", False, 10.0)
    assert watch.triggers.enabled() == ("new_rows",)
    drop = watch_from_config({"triggers": {"significant_drop": {}}}).triggers.significant_drop
    assert drop == SignificantDrop(alpha=0.01, min_rows=100)
    assert watch_from_config({"triggers": {"drift": True}}).triggers.enabled() == ("drift",)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "yolo", "triggers": {"drift": True}},
         "sweep config [watch]: 'mode' must be one of 'auto', 'propose'; got 'yolo'"),
        ({"refit": 1, "triggers": {"drift": True}},
         "sweep config [watch]: 'refit' must be a bool; got 1"),
        ({"poll_s": 0, "triggers": {"drift": True}},
         "sweep config [watch]: 'poll_s' must be a float in the range (0, inf); got 0"),
        ({"poll_s": float("nan"), "triggers": {"drift": True}},
         "'poll_s' must be a float in the range (0, inf) (finite: not nan or inf); got nan"),
        ({"poll_s": float("inf"), "triggers": {"drift": True}},
         "'poll_s' must be a float in the range (0, inf) (finite: not nan or inf); got inf"),
        ({"channel": "Prod/..", "triggers": {"drift": True}},
         "sweep config [watch]: 'channel': a channel name must be 1-64 characters"),
        ({"triggers": {"new_rows": 0}},
         "sweep config [watch.triggers]: 'new_rows' must be an int in the range [1, inf); got 0"),
        ({"triggers": {"new_rows": True}},
         "'new_rows' must be an int in the range [1, inf); got True"),
        ({"triggers": {"new_rows": 10.0}},
         "'new_rows' must be an int in the range [1, inf); got 10.0"),
        ({"triggers": {"schedule_s": -1}},
         "[watch.triggers]: 'schedule_s' must be a float in the range (0, inf); got -1"),
        ({"triggers": {"schedule_s": float("nan")}},
         "'schedule_s' must be a float in the range (0, inf) (finite: not nan or inf); got nan"),
        ({"triggers": {"min_accuracy": 1.5}},
         "[watch.triggers]: 'min_accuracy' must be a float in the range (0, 1]; got 1.5"),
        ({"triggers": {"min_accuracy": 0}},
         "'min_accuracy' must be a float in the range (0, 1]; got 0"),
        ({"triggers": {"min_accuracy": float("nan")}},
         "'min_accuracy' must be a float in the range (0, 1] (finite: not nan or inf); got nan"),
        ({"triggers": {"significant_drop": {"alpha": 0.6}}},
         "sweep config [watch.triggers.significant_drop]: 'alpha' must be a float in the range "
         "(0, 0.5]; got 0.6"),
        ({"triggers": {"significant_drop": {"alpha": 0}}},
         "'alpha' must be a float in the range (0, 0.5]; got 0"),
        ({"triggers": {"significant_drop": {"alpha": float("nan")}}},
         "'alpha' must be a float in the range (0, 0.5] (finite: not nan or inf); got nan"),
        ({"triggers": {"significant_drop": {"min_rows": 0}}},
         "[watch.triggers.significant_drop]: 'min_rows' must be an int in the range [1, inf); got 0"),
        ({"triggers": {"significant_drop": True}},
         "[watch.triggers]: 'significant_drop' must be a dict; got True"),
        ({"triggers": {"drift": "yes"}},
         "[watch.triggers]: 'drift' must be a bool; got 'yes'"),
        ({"triggers": {"config_changed": 1}},
         "[watch.triggers]: 'config_changed' must be a bool; got 1"),
        ({"triggers": {"rows": 5}},
         "sweep config [watch.triggers]: unknown key 'rows'; known keys: new_rows, schedule_s, "
         "min_accuracy, significant_drop, drift, config_changed. Fix the spelling or remove it."),
        ({"triggers": {"significant_drop": {"alpah": 0.1}}},
         "[watch.triggers.significant_drop]: unknown key 'alpah'; known keys: alpha, min_rows."),
        ({"chanel": "x", "triggers": {"drift": True}},
         "sweep config [watch]: unknown key 'chanel'; known keys: channel, mode, refit, poll_s, "
         "triggers, selection. Fix the spelling or remove it."),
        ({"triggers": "drift"},
         "sweep config [watch]: 'triggers' must be a dict; got 'drift'"),
    ],
)
def test_bad_values_are_one_line_naming_key_value_and_fix(table, message):
    with pytest.raises(ConfigError) as info:
        watch_from_config(table)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert text.endswith(".") or text.endswith("'production' or 'canary-eu'")


@pytest.mark.parametrize(
    "table",
    [{}, {"triggers": {}}, {"triggers": {"drift": False, "config_changed": False}}],
)
def test_at_least_one_trigger(table):
    with pytest.raises(ConfigError) as info:
        watch_from_config(table)
    assert str(info.value) == (
        "sweep config [watch.triggers]: at least one trigger must be on; set one of new_rows, "
        "schedule_s, min_accuracy, significant_drop, drift, config_changed; e.g. `new_rows = 1000`."
    )


def test_sweep_loader_names_the_file_and_refuses_a_bad_watch(tmp_path):
    text = (DATASETS / "digits/sweep.toml").read_text(encoding="utf-8")
    path = tmp_path / "sweep.toml"
    path.write_text(text + '\n[watch]\nmode = "always"\n[watch.triggers]\ndrift = true\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sweep\.toml \[watch\]: 'mode' must be one of"):
        load_config(path)
    raw = tomllib.loads(text)
    raw["watch"] = []
    with pytest.raises(ConfigError, match=r"sweep config \[watch\] must be a table"):
        config_from_dict(raw)
