"""``runtime.inputs``: the body checks ``POST /predict`` relies on (depth, digits, ranges)."""

from __future__ import annotations

import numpy as np
import pytest

from selection.runtime import BadInputError
from selection.runtime.inputs import MAX_INT_DIGITS, MAX_JSON_DEPTH, json_depth, parse_json, parse_rows

F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(("body", "depth"), [
    (b"1", 0),
    (b'{"rows": [[1, 2]]}', 3),
    (b"[" * 40 + b"]" * 40, 40),
    (b'[' * 20 + b'"' + b"[" * 40 + b'"' + b"]" * 20, 20),  # brackets in a string do not count
    (b'[' * 20 + b'"\\"' + b"[" * 40 + b'"' + b"]" * 20, 20),  # nor after an escaped quote
    (b"[]" * 100, 1),
])
def test_json_depth_counts_nesting_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_json_depth_is_an_upper_bound_below_the_limit() -> None:
    assert json_depth(b"[][][]") == 3  # the bracket count: no scan needed to pass the check


def test_parse_json_limits() -> None:
    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(BadInputError, match=f"at most {MAX_JSON_DEPTH} deep; it nests "
                                            f"{MAX_JSON_DEPTH + 1} deep"):
        parse_json(deep)
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(BadInputError, match=f"at most {MAX_INT_DIGITS} digits; one has "
                                            f"{MAX_INT_DIGITS + 1}"):
        parse_json(b"-" + b"7" * (MAX_INT_DIGITS + 1))
    assert parse_json(b"9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    assert parse_json(b'\xef\xbb\xbf{"rows": []}') == {"rows": []}  # a BOM is ignored
    with pytest.raises(BadInputError, match="must be JSON .UTF-8.*byte 1 is not UTF-8"):
        parse_json(b"[\xff]")


def _rows(value: object, dtype: type = np.float32) -> np.ndarray:
    return parse_rows({"rows": [[0.5, value]]}, n_features=2, features=("a", "b"), dtype=dtype)


def test_values_must_fit_the_input_type() -> None:
    assert _rows(F32_MAX)[0, 1] == np.float32(F32_MAX)
    assert _rows(-(10 ** 38))[0, 1] == np.float32(-1e38)
    for value in (3.5e38, -3.5e38, 10 ** 39, 10 ** 400, float("inf"), float("nan")):
        with pytest.raises(BadInputError, match=r"finite number; row 0, b is .*float32 input "
                                                r"\(\|x\| <= 3.402823e\+38\)"):
            _rows(value)
    assert _rows(1e39, np.float64)[0, 1] == 1e39  # a float64 model takes it
    with pytest.raises(BadInputError, match="row 0, b is 1000000"):
        _rows(10 ** 400, np.float64)


def test_a_huge_integer_in_a_named_row_is_a_bad_input_not_a_crash() -> None:
    with pytest.raises(BadInputError, match="row 1, b is 99999"):
        parse_rows({"rows": [{"a": 1, "b": 2}, {"a": 1, "b": int("9" * 400)}]},
                   n_features=2, features=("a", "b"))
