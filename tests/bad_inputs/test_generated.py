"""Generated bad inputs (hypothesis): --where strings, int flags, config numbers.

Each property is the corpus contract for inputs nobody wrote down: the
library raises ConfigError (never another exception) and the command answers
exit 0 or a one-line exit 2, leaving the store as it was.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selection.errors import ConfigError
from tests.bad_inputs.contract import one_line_problem, run_cli, snapshot

#: Fast, deterministic, and quiet: the corpus prints nothing and never flakes on timing.
QUICK = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VIA_CLI = settings(QUICK, max_examples=25)

WORDS = ["accuracy", "latency_ms", "family", "eligible", "rank", "and", "or", "not", "is", "null",
         "(", ")", "<", "<=", ">", ">=", "==", "!=", "=", "'mlp'", '"x"', "true", "false", "0.8",
         "-1", "1e999", "nan", "\x00", "'a\x00b'", "\n", "@", "acuracy", "'", "1e", "--"]

#: Token soup (mostly nonsense) and well-formed expressions nested past every limit.
SOUP = st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join)
LEAF = st.sampled_from(["accuracy > 0.5", "latency_ms <= 2", "family == 'mlp'", "rank is not null",
                        "eligible == true"])
NESTED = st.recursive(
    LEAF,
    lambda inner: st.one_of(inner.map(lambda e: f"({e})"), inner.map(lambda e: f"not {e}"),
                            st.tuples(inner, st.sampled_from([" and ", " or "]), inner).map("".join)),
    max_leaves=400,
)
WHERE = st.one_of(SOUP, NESTED, st.text(max_size=60))


def _columns() -> dict:
    from sqlalchemy import column

    from selection.leaderboard.sql import FILTER_KINDS

    return {name: (column(name), kind) for name, kind in FILTER_KINDS.items()}


@QUICK
@given(st.lists(WHERE, min_size=1, max_size=3))
def test_where_compiles_or_says_why(expressions: list[str]) -> None:
    from sqlalchemy.dialects import sqlite

    from selection.leaderboard.where import compile_where

    try:
        condition = compile_where(expressions, _columns())
    except ConfigError as exc:
        assert "\n" not in " ".join(str(exc).split())
        return
    assert condition is not None
    str(condition.compile(dialect=sqlite.dialect()))  # what was accepted also compiles to SQL


@VIA_CLI
@given(where=WHERE)
def test_where_through_the_command(where: str, prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(prepared)
    result = run_cli(capsys, "leaderboard", "--home", str(prepared), "--format", "json", "--where", where)
    if result.code != 0:
        problem = one_line_problem(result.code, result.stderr)
        assert problem is None, problem
    assert snapshot(prepared) == before


@QUICK
@given(st.one_of(st.integers(min_value=-(10**40), max_value=10**40).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=30)))
def test_int_flags_take_their_range_or_refuse(text: str) -> None:
    from shadow.cli.common import INT64_MAX, int_arg

    parse = int_arg(low=1)
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert "must be an int >= 1" in str(exc)
        return
    assert 1 <= value <= INT64_MAX


@VIA_CLI
@given(top=st.integers(min_value=-(10**25), max_value=10**25))
def test_top_through_the_command(top: int, prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "leaderboard", "--home", str(prepared), "--format", "json", "--top", str(top))
    if 1 <= top < 2**63:
        assert result.code == 0, result.stderr
    else:
        assert one_line_problem(result.code, result.stderr, ["--top"]) is None, result.stderr


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30),
                    st.booleans(), st.text(max_size=5))


@QUICK
@given(key=st.sampled_from(["max_latency_ms", "max_size_bytes", "min_accuracy"]), value=NUMBERS)
def test_ranking_limits_are_finite_numbers(key: str, value: object) -> None:
    from selection.ranking.policies import policy_from_config

    good = (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value < 2**63)
    try:
        policy_from_config({key: value}, "[ranking]")
    except ConfigError:
        assert not good
    else:
        assert good


@QUICK
@given(value=NUMBERS)
def test_gate_guards_are_finite_percentages(value: object) -> None:
    from selection.gate.policy import gate_from_config

    good = (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)
    try:
        gate_from_config({"guards": {"latency_ms": value}}, "[gate]")
    except ConfigError:
        assert not good
    else:
        assert good


@QUICK
@given(seed=st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=True)))
def test_seeds_fit_numpy_and_torch(seed: object) -> None:
    """A seed the config accepts is one numpy's legacy RandomState and torch both take."""
    import numpy as np

    from shadow.sweep.config import MAX_SEED, config_from_dict

    raw = {"sweep": {"dataset": "noaa-weather", "seed": seed}, "holdout": {"rows": 100},
           "slices": [{"strategy": "recent", "rows": 100}], "model": {"family": "mlp"}}
    try:
        config = config_from_dict(raw)
    except ConfigError:
        assert not (isinstance(seed, int) and 0 <= seed <= MAX_SEED)
        return
    np.random.RandomState(config.seed)  # raises past 2**32 - 1
    assert 0 <= config.seed <= MAX_SEED
