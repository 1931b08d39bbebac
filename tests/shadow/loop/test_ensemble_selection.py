"""``[watch.selection] policy = "ensemble"``: the loop gates the sweep's ensemble, not its rank 1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from selection.home import Home
from selection.leaderboard.frame import best_candidate
from selection.store import Store
from shadow.loop.decide import ensemble_challenger
from shadow.sweep.ensemble import ENSEMBLE_FAMILY
from tests.bad_inputs.contract import assert_user_error, run_cli
from tests.selection.conftest import Factory


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Factory]:
    with Store.open(Home(tmp_path / "home")) as store:
        made = Factory(store)
        made.sweep("sw-1")
        yield made


def _ensemble(factory: Factory, cid: str, **kwargs: object) -> None:
    record = factory.candidate(cid, store=False, **kwargs)  # type: ignore[arg-type]
    assert record.onnx_sha256 is not None
    factory.store.add_candidate(replace(record, family=ENSEMBLE_FAMILY, slice_id="ensemble-top2"),
                                {record.onnx_sha256: factory.fake_onnx(cid)})


def test_the_ensemble_is_chosen_even_where_a_member_ranks_above_it(factory: Factory) -> None:
    factory.candidate("c-member", accuracy=0.91)
    factory.candidate("c-other", accuracy=0.80)
    _ensemble(factory, "c-ens", accuracy=0.88)
    assert best_candidate(factory.store, sweep="sw-1") == "c-member"
    challenger, chosen = ensemble_challenger(factory.store, "sw-1")
    assert challenger == "c-ens"
    assert chosen["policy"] == "ensemble" and chosen["expert"] == "ensemble"
    assert "c-ens" in chosen["reason"] and "rank 2" in chosen["reason"]


def test_a_failed_ensemble_falls_back_to_rank_1_and_says_why(factory: Factory) -> None:
    factory.candidate("c-member", accuracy=0.91)
    _ensemble(factory, "c-ens", status="failed")
    challenger, chosen = ensemble_challenger(factory.store, "sw-1")
    assert challenger == "c-member"
    assert chosen["expert"] == "holdout"
    assert "rank 1 of sweep sw-1" in chosen["reason"] and "ensemble failed" in chosen["reason"]


def test_a_sweep_without_an_ensemble_gives_rank_1(factory: Factory) -> None:
    factory.candidate("c-member", accuracy=0.91)
    challenger, chosen = ensemble_challenger(factory.store, "sw-1")
    assert challenger == "c-member"
    assert chosen == {"policy": "ensemble", "expert": "holdout",
                      "reason": "rank 1 of sweep sw-1: it has no eligible ensemble"}


def test_an_ineligible_ensemble_falls_back_and_says_why(factory: Factory) -> None:
    factory.candidate("c-member", accuracy=0.91)
    _ensemble(factory, "c-ens", accuracy=None)
    challenger, chosen = ensemble_challenger(factory.store, "sw-1")
    assert challenger == "c-member"
    assert "its ensemble is not eligible (no accuracy" in chosen["reason"], chosen


def test_an_ensemble_ranked_only_on_an_edge_device_is_not_taken(factory: Factory) -> None:
    # The gate judges on the host: an ensemble with no host result must not be the challenger,
    # even though it is rank 1 on its own device's board.
    from selection import DeviceResult

    factory.candidate("c-member", accuracy=0.91)
    edge = DeviceResult(device="snapdragon-8-gen-2-htp", status="ok", accuracy=0.95, latency_ms=1.0)
    _ensemble(factory, "c-ens", devices=(edge,))
    challenger, chosen = ensemble_challenger(factory.store, "sw-1")
    assert challenger == "c-member" and chosen["expert"] == "holdout"


@pytest.mark.slow
@pytest.mark.integration
def test_the_controller_gates_and_promotes_the_ensemble_refit(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.shadow.loop.test_backtest import backtest_with

    summary, out = backtest_with(
        tmp_path, capsys, '\n[watch.selection]\npolicy = "ensemble"\n\n[ensemble]\ntop_k = 2\n', n=600)
    assert summary["sweeps"] >= 2
    # The ensemble is the system's pick, never one of the fixed rules it is measured against.
    assert summary["rules_post"] and not any("ensemble" in rule for rule in summary["rules_post"])
    with Store.open(Home(out / "home")) as store:
        gates = store.list_events(channel="production", kinds="gate")
        promotions = store.list_events(channel="production", kinds="promotion")
        assert len(gates) == summary["sweeps"]
        for gate in gates:
            judged = store.get_candidate(str(gate.candidate_id))
            # Every sweep built its ensemble, so that is what the gate judged.
            assert judged.family == ENSEMBLE_FAMILY, gate.evidence["selection"]
            assert gate.evidence["selection"]["expert"] == "ensemble"
        assert promotions
        for promotion in promotions:
            served = store.get_candidate(str(promotion.candidate_id))
            # Refit: the ensemble of its members' refits, with the parent's weights.
            assert served.family == ENSEMBLE_FAMILY and served.refit_of is not None
            parent = store.get_candidate(served.refit_of)
            assert served.params["weights"] == parent.params["weights"]
            refits = [store.get_candidate(c) for c in served.lineage["ensemble"]["member_refits"]]
            assert [r.refit_of for r in refits] == parent.params["members"]


def test_the_preset_adds_the_ensemble_the_policy_gates() -> None:
    from shadow.loop.backtest import replay_config
    from shadow.loop.backtest.preset import ENSEMBLE_TOP_K
    from shadow.sweep.config import config_from_dict

    config = config_from_dict(replay_config("noaa-weather", 365, selection="ensemble"))
    assert config.watch is not None and config.watch.selection.policy == "ensemble"
    assert config.ensemble is not None and config.ensemble.top_k == ENSEMBLE_TOP_K
    sized = config_from_dict(replay_config("noaa-weather", 365, selection="ensemble", ensemble=2))
    assert sized.ensemble is not None and sized.ensemble.top_k == 2
    default = config_from_dict(replay_config("noaa-weather", 365))
    assert default.watch is not None and default.watch.selection.policy == "ensemble"
    assert default.ensemble is not None and default.ensemble.top_k == ENSEMBLE_TOP_K
    plain = config_from_dict(replay_config("noaa-weather", 365, selection="holdout"))
    assert plain.ensemble is None and plain.watch is not None
    assert plain.watch.selection.policy == "holdout"


def test_backtest_selection_flag_with_a_sweep_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text('[sweep]\nname = "x"\ndataset = "noaa-weather"\n[holdout]\nrows = 100\n'
                      '[[slices]]\nstrategy = "all"\n[model]\nfamily = "mlp"\n')
    out = tmp_path / "bt"
    outcome = run_cli(capsys, "backtest", str(config), "--period", "365", "--selection", "ensemble",
                      "--out", str(out))
    assert_user_error(outcome, "--selection", str(config))
    assert not out.exists()


def test_the_policy_with_a_warm_start_is_one_line() -> None:
    from shadow.errors import ConfigError
    from shadow.loop.backtest import replay_config
    from shadow.sweep.config import config_from_dict

    with pytest.raises(ConfigError, match=r"never warm-started; pass --selection holdout"):
        replay_config("noaa-weather", 365, selection="ensemble", warm_start=True)
    # A sweep file with both tables, as a user would write it.
    raw = replay_config("noaa-weather", 365, selection="holdout", warm_start=True)
    raw["watch"]["selection"]["policy"] = "ensemble"
    raw["ensemble"] = {"top_k": 3}
    with pytest.raises(ConfigError, match=r"\[warm_start\].*never warm-started.*remove \[warm_start\]"):
        config_from_dict(raw)


def test_backtest_selection_flag_reaches_the_preset_and_lists_every_policy() -> None:
    import argparse

    from shadow.cli.cmd_backtest import _config, add_parsers
    from shadow.sweep.watch_config import POLICIES

    args = argparse.Namespace(config=None, dataset="noaa-weather", period=365, warm_start=False,
                              baseline=None, selection="ensemble")
    config = _config(args, 0)
    assert config.watch is not None and config.watch.selection.policy == "ensemble"
    assert config.ensemble is not None
    # Without --selection: the preset's vote, or rank 1 for a warm start (never idle).
    for warm, policy in ((False, "ensemble"), (True, "holdout")):
        unset = argparse.Namespace(**{**vars(args), "selection": None, "warm_start": warm})
        chosen = _config(unset, 0)
        assert chosen.watch is not None and chosen.watch.selection.policy == policy
        assert (chosen.warm_start is not None) is warm
    verbs = argparse.ArgumentParser().add_subparsers()
    add_parsers(verbs)
    flag = next(a for a in verbs.choices["backtest"]._actions if a.dest == "selection")
    assert tuple(flag.choices or ()) == POLICIES  # spelled out in the CLI for a fast --help


def test_drift_replay_names_results_by_setting_and_refuses_the_vote_beside_a_warm_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "drift_replay.py"
    spec = importlib.util.spec_from_file_location("drift_replay_under_test", path)
    assert spec is not None and spec.loader is not None
    replay = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = replay
    spec.loader.exec_module(replay)

    def name(*argv: str, seed: int | None = 0) -> str:
        return str(replay.stem(replay.parse_args(list(argv)), seed))

    # The default policy (the vote) keeps the plain names; every other setting has its own.
    assert name("--quick") == "drift_replay_quick"
    assert name("--quick", "--selection", "holdout", seed=None) == "drift_replay_quick_holdout_seeds"
    assert name("--quick", "--warm-start") == "drift_replay_quick_warm_start"  # rank 1 implied
    assert name("--quick", "--ensemble", "2", seed=1) == "drift_replay_quick_ensemble2_seed1"
    assert name("--dataset", "sp500-direction", "--period", "63", "--baseline", "prior") == (
        "drift_replay_sp500-direction_baseline_prior")
    assert name("--selection", "track-record") == "drift_replay_track_record"
    with pytest.raises(SystemExit) as exit_info:
        replay.parse_args(["--selection", "ensemble", "--warm-start"])
    assert exit_info.value.code == 2
    assert "--selection holdout" in capsys.readouterr().err
