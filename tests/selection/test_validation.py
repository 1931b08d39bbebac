import pytest

from shadow.errors import ConfigError
from shadow.params import Param, parse_table

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
    with pytest.raises(ConfigError, match=r"unknown key 'rowz'; known keys are 'rows', 'fraction', 'mode'"):
        parse_table({"rowz": 1}, PARAMS, "t")


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'rows'"):
        parse_table({}, PARAMS, "t")
