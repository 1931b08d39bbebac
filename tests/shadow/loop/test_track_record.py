"""Selection by track record: expert keys, picks, discounted scores, and the controller using them."""

from __future__ import annotations

from pathlib import Path

import pytest

from selection.home import Home
from selection.records import SliceRecord
from selection.store import Store
from shadow.loop.track_record import HOLDOUT, discounted_scores, expert_picks, strategy_keys
from tests.bad_inputs.contract import assert_user_error, run_cli


def sl(slice_id: str, strategy: str, **params: int) -> SliceRecord:
    return SliceRecord("s", slice_id, strategy, dict(params), 10, "0" * 64)


def test_moving_slices_are_keyed_by_rank_so_an_expert_spans_sweeps() -> None:
    first = [sl("all", "all"), sl("recent-100", "recent", rows=100),
             sl("expanding-300", "expanding", end=300), sl("expanding-500", "expanding", end=500),
             sl("window-50@450", "window", start=450), sl("window-50@400", "window", start=400)]
    keys = strategy_keys(first)
    assert keys == {"all": "all", "recent-100": "recent-100", "expanding-500": "expanding[0]",
                    "expanding-300": "expanding[1]", "window-50@450": "window[0]",
                    "window-50@400": "window[1]"}
    later = strategy_keys([sl("expanding-600", "expanding", end=600)])
    assert later == {"expanding-600": "expanding[0]"}  # the largest, again


def test_each_expert_picks_its_best_ranked_candidate() -> None:
    slices = [sl("all", "all"), sl("recent-100", "recent", rows=100)]
    ranked = [("c3", "all", 3), ("c1", "recent-100", 1), ("c2", "all", 2), ("c4", "recent-100", 4)]
    assert expert_picks(ranked, slices) == {HOLDOUT: "c1", "recent-100": "c1", "all": "c2"}
    assert expert_picks([], slices) == {}


def test_discounted_scores_weigh_recent_periods_and_rows() -> None:
    history = {"a": [(90, 100), (50, 100)], "b": [(50, 100), (90, 100)], "c": [(0, 0)]}
    scores = discounted_scores(history, discount=0.5)
    # a: (0.5*90 + 50) / (0.5*100 + 100); b the other way round: the newest period counts most.
    assert scores["a"] == pytest.approx(95 / 150) and scores["b"] == pytest.approx(115 / 150)
    assert "c" not in scores  # no rows, no score
    flat = discounted_scores(history, discount=1.0)
    assert flat["a"] == flat["b"] == pytest.approx(0.7)


@pytest.mark.parametrize("table, fragment", [
    ('policy = "best"', "policy"),
    ("discount = 0", "discount"),
    ("min_record = 0", "min_record"),
    ("learning_rate = 1", "learning_rate"),
    # The ensemble policy gates the sweep's [ensemble], which this file lacks.
    ('policy = "ensemble"', "[ensemble]"),
])
def test_bad_selection_tables_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, fragment: str,
) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        '[sweep]\nname = "x"\ndataset = "noaa-weather"\n[holdout]\nrows = 100\n[[slices]]\n'
        'strategy = "all"\n[model]\nfamily = "mlp"\n[watch]\n[watch.triggers]\nnew_rows = 10\n'
        f"[watch.selection]\n{table}\n")
    home = tmp_path / "home"
    outcome = run_cli(capsys, "watch", str(config), "--once", "--home", str(home))
    assert_user_error(outcome, "[watch.selection]", fragment)
    assert not Home(home).db_path.exists()


@pytest.mark.slow
@pytest.mark.integration
def test_the_controller_follows_the_record_and_stores_it_with_the_gate(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str],
) -> None:
    from selection.leaderboard.frame import best_candidate
    from tests.shadow.loop.test_backtest import backtest_with

    summary, out = backtest_with(
        tmp_path, capsys, '\n[watch.selection]\npolicy = "track-record"\nmin_record = 2\n', n=800)
    assert summary["sweeps"] == 5
    with Store.open(Home(out / "home")) as store:
        gates = list(reversed(store.list_events(channel="production", kinds="gate")))
        # What the gate judged is the followed expert's pick out of that sweep.
        for gate in gates:
            expert = gate.evidence["selection"]["expert"]
            if expert == HOLDOUT:
                assert gate.candidate_id == best_candidate(store, sweep=str(gate.sweep_id))
            else:
                picked = store.get_candidate(str(gate.candidate_id))
                keys = strategy_keys(store.get_slices(str(gate.sweep_id)))
                assert keys[picked.slice_id] == expert
    chosen = [g.evidence["selection"] for g in gates]
    assert all(c["policy"] == "track-record" for c in chosen)
    # Sweeps 1 and 2 have fewer than 2 scored periods behind them: rank 1, said so.
    assert [c["expert"] for c in chosen[:2]] == [HOLDOUT, HOLDOUT]
    assert all("record is short" in c["reason"] for c in chosen[:2])
    # From the third on, every expert (rank 1 and each slice) has a discounted score.
    for c in chosen[2:]:
        assert set(c["scores"]) >= {HOLDOUT, "all", "recent-100", "recent-200"}
        assert c["periods"][HOLDOUT] >= 2 and 0 <= min(c["scores"].values())
        leader = max(c["scores"].values())
        if min(c["periods"].values()) < 2:
            # A slice the first sweep dropped as a duplicate of another (recent-200 is all
            # history while only 200 rows precede the holdout) has one period less: short.
            assert c["expert"] == HOLDOUT and "record is short" in c["reason"], c
        else:
            assert c["scores"][c["expert"]] == leader, c
    assert any(min(c["periods"].values()) >= 2 for c in chosen[2:]), "no gate had a full record"
