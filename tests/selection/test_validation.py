"""selection.validation: declared params, one unknown-key wording, numbers that are really numbers."""

import math

import pytest

from selection.errors import ConfigError
from selection.validation import Param, check_known_keys, parse_table, read_toml

PARAMS = [
    Param("rows", int, low=1),
    Param("fraction", float, default=0.5, low=0.0, high=1.0, low_open=True),
    Param("mode", str, default="a", choices=("a", "b")),
]


def test_defaults_are_filled_and_ints_widen_to_float():
    assert parse_table({"rows": 3, "fraction": 1}, PARAMS, "t") == {"rows": 3, "fraction": 1.0, "mode": "a"}


def test_out_of_range_message_states_rule_value_and_where():
    with pytest.raises(ConfigError, match=r"t: 'rows' must be an int in the range \[1, inf\); got 0"):
        parse_table({"rows": 0}, PARAMS, "t")
    with pytest.raises(ConfigError, match=r"'fraction' must be a float in the range \(0, 1\]; got 0.0"):
        parse_table({"rows": 1, "fraction": 0.0}, PARAMS, "t")


def test_bool_is_not_an_int_and_wrong_types_fail():
    with pytest.raises(ConfigError, match="'rows' must be an int"):
        parse_table({"rows": True}, PARAMS, "t")
    with pytest.raises(ConfigError, match="'mode' must be one of 'a', 'b'; got 'c'"):
        parse_table({"rows": 1, "mode": "c"}, PARAMS, "t")


def test_unknown_keys_are_listed_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"^t: unknown key 'rowz'; known keys: rows, fraction, mode\. "
                                          r"Fix the spelling or remove it\.$"):
        parse_table({"rowz": 1}, PARAMS, "t")
    with pytest.raises(ConfigError, match=r"unknown keys 'a', 'b'; known keys: x\."):
        check_known_keys({"b": 1, "a": 2, "x": 3}, ["x"], "t")
    check_known_keys({"x": 1}, ["x", "y"], "t")  # known keys pass


def test_unknown_keys_can_raise_a_config_error_subclass():
    class ManifestError(ConfigError):
        pass

    with pytest.raises(ManifestError, match=r"^m: unknown key 'z'; known keys: a\."):
        check_known_keys(["z"], ["a"], "m", error=ManifestError)


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'rows'"):
        parse_table({}, PARAMS, "t")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_even_without_a_range(value):
    unbounded = [Param("scale", float)]
    with pytest.raises(ConfigError, match=r"'scale' must be a float \(finite: not nan or inf\); got"):
        parse_table({"scale": value}, unbounded, "t")
    with pytest.raises(ConfigError, match=r"'fraction' must be a float in the range \(0, 1\] \(finite"):
        parse_table({"rows": 1, "fraction": value}, PARAMS, "t")


def test_ints_beyond_the_declared_range_are_refused_whatever_their_size():
    bounded = [Param("epochs", int, low=1, high=10_000), Param("lr", float, low=0.0, high=1.0)]
    with pytest.raises(ConfigError, match=r"'epochs' must be an int in the range \[1, 10000\]; got 10001"):
        parse_table({"epochs": 10_001, "lr": 0.1}, bounded, "t")
    # Past float's range an int is no float at all: a ConfigError, not an OverflowError.
    with pytest.raises(ConfigError, match=r"'lr' must be a float in the range \[0, 1\]; got 1000"):
        parse_table({"epochs": 1, "lr": 10**400}, bounded, "t")
    assert parse_table({"epochs": 10_000, "lr": 1}, bounded, "t") == {"epochs": 10_000, "lr": 1.0}


def test_toml_nan_and_inf_reach_the_check_and_fail(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("fraction = nan\nrows = 1\n")
    with pytest.raises(ConfigError, match=r"'fraction' must be .*finite.*; got nan"):
        parse_table(read_toml(path, "config", "create it", "name a file"), PARAMS, str(path))
