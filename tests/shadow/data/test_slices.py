import numpy as np
import pytest

from shadow.data.slicing.base import (
    MIN_SLICE_ROWS,
    STRATEGIES,
    build_strategy,
    cut_holdout,
    make_slices,
)
from shadow.errors import ConfigError

N = 1000


def every_strategy() -> list:
    tables = [
        {"strategy": "all"},
        {"strategy": "recent", "rows": 100},
        {"strategy": "window", "size": 200, "stride": 150},
        {"strategy": "bootstrap", "n": 3, "fraction": 0.5, "seed": 4},
        {"strategy": "expanding", "min_rows": 300, "step": 200},
        {"strategy": "segment", "column": "region", "min_rows": 100,
         "within": {"strategy": "recent", "rows": 100}},
    ]
    return [build_strategy(t, "test") for t in tables]


def test_holdout_is_the_most_recent_rows():
    assert cut_holdout(N, {"rows": 100}).rows.tolist() == list(range(900, 1000))
    assert cut_holdout(N, {"fraction": 0.2}).start == 800


REGIONS = np.array(["north", "south", "east"] * (N // 3 + 1))[:N]


def test_holdout_never_overlaps_any_training_slice():
    holdout = cut_holdout(N, {"rows": 100})
    slices = make_slices(every_strategy(), holdout.start, {"region": REGIONS[:holdout.start]})
    assert {s.strategy for s in slices} == set(STRATEGIES)
    for piece in slices:
        assert len(piece.rows) >= MIN_SLICE_ROWS
        assert piece.rows.max() < holdout.start, piece.slice_id
        assert not np.intersect1d(piece.rows, holdout.rows).size


def test_slice_ids_and_rows_are_stable():
    columns = {"region": REGIONS[:900]}
    first = make_slices(every_strategy(), 900, columns)
    second = make_slices(every_strategy(), 900, columns)
    assert [s.slice_id for s in first] == [s.slice_id for s in second]
    assert [s.rows_sha256 for s in first] == [s.rows_sha256 for s in second]
    assert len({s.slice_id for s in first}) == len(first)


def test_windows_end_at_the_holdout_and_step_back_by_stride():
    (strategy,) = [build_strategy({"strategy": "window", "size": 200, "stride": 150}, "t")]
    pieces = strategy.slices(900, {})
    assert [p.slice_id for p in pieces][-1] == "window-200@700"
    assert [int(p.rows[0]) for p in pieces] == [100, 250, 400, 550, 700]
    limited = build_strategy({"strategy": "window", "size": 200, "stride": 150, "count": 2}, "t")
    assert [int(p.rows[0]) for p in limited.slices(900, {})] == [550, 700]


def test_bootstrap_replicates_do_not_depend_on_n():
    two = build_strategy({"strategy": "bootstrap", "n": 2, "seed": 1}, "t").slices(500, {})
    five = build_strategy({"strategy": "bootstrap", "n": 5, "seed": 1}, "t").slices(500, {})
    assert [s.rows_sha256 for s in two] == [s.rows_sha256 for s in five[:2]]
    assert two[0].rows_sha256 != two[1].rows_sha256


def test_same_rows_from_two_strategies_train_once():
    recent = build_strategy({"strategy": "recent", "rows": 200}, "t")
    window = build_strategy({"strategy": "window", "size": 200, "stride": 200, "count": 1}, "t")
    assert [s.slice_id for s in make_slices([recent, window], 900)] == ["recent-200"]


def test_expanding_windows_grow_from_the_oldest_row_to_the_holdout():
    pieces = build_strategy({"strategy": "expanding", "min_rows": 300, "step": 250}, "t").slices(900, {})
    assert [p.slice_id for p in pieces] == ["expanding-400", "expanding-650", "expanding-900"]
    assert all(p.rows[0] == 0 and len(p.rows) == int(p.slice_id.split("-")[1]) for p in pieces)
    latest = build_strategy({"strategy": "expanding", "min_rows": 300, "step": 250, "count": 1}, "t")
    assert [p.slice_id for p in latest.slices(900, {})] == ["expanding-900"]


def test_segments_and_recent_rows_within_each_segment():
    values = np.array(["a"] * 500 + ["b"] * 300 + ["c"] * 10 + ["b"] * 90)
    plain = build_strategy({"strategy": "segment", "column": "site", "min_rows": 50}, "t")
    pieces = plain.slices(900, {"site": values})
    assert [p.slice_id for p in pieces] == ["segment-site=a", "segment-site=b"]  # c is too small
    assert all((values[p.rows] == p.params["value"]).all() for p in pieces)
    nested = build_strategy(
        {"strategy": "segment", "column": "site", "min_rows": 50,
         "within": {"strategy": "recent", "rows": 60}}, "t")
    b_recent = nested.slices(900, {"site": values})[1]
    assert b_recent.slice_id == "segment-site=b/recent-60"
    assert b_recent.rows.tolist() == list(range(840, 900))  # the last 60 'b' rows in time


def test_segment_column_must_be_declared():
    with pytest.raises(ConfigError, match=r"segment column 'site' is not a segment column.*segment_columns"):
        build_strategy({"strategy": "segment", "column": "site"}, "t").slices(900, {"region": REGIONS})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"strategy": "latest"},
         r"unknown slice strategy 'latest'; known: all, recent, window, bootstrap, expanding, segment\. Set"),
        ({"rows": 5}, r"needs 'strategy'"),
        ({"strategy": "recent", "rows": 100, "size": 3}, r"unknown key 'size'; known keys: rows\. Fix"),
        ({"strategy": "recent"}, r"missing required key 'rows'"),
    ],
)
def test_bad_slice_tables(table, message):
    with pytest.raises(ConfigError, match=message):
        build_strategy(table, "t")


def test_slice_larger_than_the_pool_is_refused():
    with pytest.raises(ConfigError, match=r"slice of 5000 rows does not fit"):
        build_strategy({"strategy": "recent", "rows": 5000}, "t").slices(900, {})


@pytest.mark.parametrize(
    ("table", "message"),
    [({}, "set exactly one of"), ({"rows": 30, "fraction": 0.1}, "set exactly one of"),
     ({"rows": 990}, "leaves 10 to train on")],
)
def test_bad_holdouts(table, message):
    with pytest.raises(ConfigError, match=message):
        cut_holdout(N, table)
