"""The store contract, run unchanged on every backend (SQLite and PostgreSQL).

Every test takes ``any_store``/``any_make`` (parametrized in conftest.py), so
a backend that passes here can hold a real sweep, its leaderboard and its
promotion history.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from sqlalchemy import func, select

from selection import HOST_DEVICE, ConfigError, DeviceResult, NotFoundError, Store
from selection.channels.promotion import history, promote
from selection.gate.record import GateCheck, GateDecision, ModelSummary
from selection.leaderboard.frame import best_candidate, leaderboard
from selection.ranking.policies import policy_from_config
from selection.store import schema


def _npu(sha: str, accuracy: float, latency: float, size: int = 1000, **extra) -> DeviceResult:
    return DeviceResult("npu", "ok", accuracy=accuracy, latency_ms=latency, size_bytes=size,
                        artifact_sha256=sha, extra=extra)


def _board(any_make, n_fail: int = 0) -> None:
    any_make.sweep()
    for cid, acc, lat, extra in [
        ("c-a", 0.90, 1.0, {}),
        ("c-b", 0.95, 3.0, {"has_fallback": True, "cpu_fallback_ops": ["Erf"]}),
        ("c-c", 0.85, 0.5, {"peak_activation_bytes": 10, "memory_budget_bytes": 5}),
        ("c-d", 0.80, 0.4, {"eligible": False, "ineligible_reason": "op Mod unsupported"}),
        ("c-e", 0.70, 0.2, {"has_fallback": False, "peak_activation_bytes": 1,
                            "memory_budget_bytes": 5, "eligible": True}),
    ]:
        sha = any_make.candidate(cid, store=False).onnx_sha256
        any_make.candidate(cid, devices=(
            DeviceResult(HOST_DEVICE, "ok", accuracy=acc, latency_ms=lat * 2, size_bytes=1000,
                         artifact_sha256=sha),
            _npu(sha, acc, lat, **extra)))
    for i in range(n_fail):
        any_make.candidate(f"c-fail{i}", status="failed", accuracy=None)


def test_round_trip_and_schema_version(any_store: Store, any_make) -> None:
    any_make.sweep("sw-1", config={"ranking": {"max_latency_ms": 2.0}, "nested": {"a": [1]}})
    record = any_make.candidate("c-1", accuracy=0.75)
    assert any_store.get_candidate("c-1") == record
    assert any_store.get_sweep("sw-1").config["ranking"] == {"max_latency_ms": 2.0}
    with any_store.snapshot() as conn:
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
    assert versions == [schema.SCHEMA_VERSION]


def test_eligibility_reasons_and_ranks(any_store: Store, any_make) -> None:
    _board(any_make, n_fail=1)
    frame = leaderboard(any_store, device="npu")
    got = {r.candidate_id: (None if pd.isna(r.rank) else int(r.rank), r.eligible)
           for r in frame.itertuples()}
    assert got["c-a"] == (1, True) and got["c-e"] == (2, True)
    assert got["c-b"] == (None, False) and got["c-c"] == (None, False) and got["c-d"] == (None, False)
    why = dict(zip(frame["candidate_id"], frame["ineligible_reason"]))
    assert "fall back to the CPU" in why["c-b"]
    assert "peak activations 10 B exceed the memory budget 5 B" in why["c-c"]
    assert "op Mod unsupported" in why["c-d"]
    assert why["c-a"] is None
    # host rows carry no device extras: all eligible, ranked by accuracy.
    host = leaderboard(any_store, device=HOST_DEVICE, status="ok")
    assert list(host["candidate_id"]) == ["c-b", "c-a", "c-c", "c-d", "c-e"]
    assert list(host["rank"]) == [1, 2, 3, 4, 5]
    # the "accuracy" policy ignores device constraints.
    loose = leaderboard(any_store, device="npu", policy="accuracy")
    assert list(loose["candidate_id"][:2]) == ["c-b", "c-a"]
    assert best_candidate(any_store, device="npu") == "c-a"


def test_where_top_pareto_sort_and_filters(any_store: Store, any_make) -> None:
    _board(any_make, n_fail=2)
    fast = leaderboard(any_store, device="npu", where=["latency_ms < 0.9", "eligible == true"])
    assert list(fast["candidate_id"]) == ["c-e"] and int(fast["rank"][0]) == 2  # rank is global
    assert list(leaderboard(any_store, device="npu", top=1)["candidate_id"]) == ["c-a"]
    top = leaderboard(any_store, top=2)
    assert list(zip(top["device"], top["rank"])) == [(HOST_DEVICE, 1), (HOST_DEVICE, 2), ("npu", 1), ("npu", 2)]
    either = leaderboard(any_store, device="npu", where="candidate_id == 'c-a' or accuracy < 0.75")
    assert sorted(either["candidate_id"]) == ["c-a", "c-e"]
    assert list(leaderboard(any_store, status="failed")["candidate_id"]) == ["c-fail0", "c-fail1"]
    assert leaderboard(any_store, family="cnn").empty
    assert len(leaderboard(any_store, slice_id="slice-0")) == 12
    # npu eligible rows: c-a (0.90, 1.0) and c-e (0.70, 0.2): neither dominates.
    front = leaderboard(any_store, device="npu", pareto=True)
    assert sorted(front["candidate_id"]) == ["c-a", "c-e"]
    assert dict(zip(front["candidate_id"], front["rank"])) == {"c-a": 1, "c-e": 2}
    by_latency = leaderboard(any_store, device="npu", sort="-latency_ms")
    assert list(by_latency["candidate_id"][:2]) == ["c-b", "c-a"]


def test_policy_from_sweep_config(any_store: Store, any_make) -> None:
    any_make.sweep("sw-1", config={"ranking": {"max_latency_ms": 1.5}})
    any_make.candidate("c-slow", accuracy=0.9, latency_ms=2.0)
    any_make.candidate("c-fast", accuracy=0.8, latency_ms=1.0)
    frame = leaderboard(any_store)
    assert list(frame["candidate_id"]) == ["c-fast", "c-slow"]
    assert "latency_ms 2 > max 1.5" in frame["ineligible_reason"][1]
    assert frame["policy"][0] == "default+config"
    assert best_candidate(any_store) == "c-fast"
    assert list(leaderboard(any_store, policy="accuracy")["candidate_id"]) == ["c-slow", "c-fast"]


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("foo < 2", "unknown column 'foo'; known columns: rank, eligible, candidate_id"),
        ("accuracy > 'high'", "holds number values"),
        ("accuracy >", "expected a value"),
        ("latency_ms < 2 junk", "unexpected 'junk'"),
        ("", "empty"),
        ("accuracy ~ 2", "cannot read"),
    ],
)
def test_bad_where_is_a_clear_error(any_store: Store, where: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        leaderboard(any_store, where=[where])
    assert fragment in str(info.value)


def test_bad_sort_and_policy(any_store: Store) -> None:
    with pytest.raises(ConfigError, match="--sort must name leaderboard columns.*known columns"):
        leaderboard(any_store, sort="speed")
    with pytest.raises(ConfigError, match="unknown ranking policy 'fastest'; known: default"):
        leaderboard(any_store, policy="fastest")


def test_failed_early_candidate_is_listed(any_store: Store, any_make) -> None:
    any_make.sweep(config={"devices": ["npu", HOST_DEVICE]}, devices=("npu", HOST_DEVICE))
    any_make.candidate("c-ok")
    early = dataclasses.replace(any_make.candidate("c-early", store=False), status="failed",
                                error="diverged", devices=(), onnx_sha256=None)
    any_store.add_candidate(early, {})
    frame = leaderboard(any_store)
    assert list(zip(frame["candidate_id"], frame["device"])) == [("c-ok", HOST_DEVICE), ("c-early", "npu")]
    assert list(leaderboard(any_store, device="npu")["candidate_id"]) == ["c-early"]
    with pytest.raises(NotFoundError, match="devices present"):
        leaderboard(any_store, device="tpu")


def _refit(any_store: Store, any_make, parent: str = "c-a", cid: str = "c-r") -> None:
    """A refit of ``parent`` that would top every board: in-sample scores, on a device of its own too."""
    sha = any_make.candidate(cid, store=False).onnx_sha256
    record = any_make.candidate(cid, store=False, devices=(
        DeviceResult(HOST_DEVICE, "ok", accuracy=0.99, latency_ms=0.1, size_bytes=10, artifact_sha256=sha),
        _npu(sha, 0.99, 0.1, 10, has_fallback=False, eligible=True),
        DeviceResult("tpu", "ok", accuracy=0.99, latency_ms=0.1, size_bytes=10, artifact_sha256=sha)))
    record = dataclasses.replace(record, refit_of=parent, lineage={**record.lineage, "refit": {"of": parent}})
    any_store.add_candidate(record, {sha: any_make.fake_onnx(cid)})


def test_refits_are_never_ranked(any_store: Store, any_make) -> None:
    """Every leaderboard query leaves refits out by ``candidates.refit_of``; their rows keep their sweep."""
    _board(any_make, n_fail=1)
    before = {view: leaderboard(any_store, **kwargs) for view, kwargs in {
        "all": {}, "npu": {"device": "npu"}, "top": {"top": 1}, "pareto": {"pareto": True},
        "pareto-latency": {"pareto": True, "policy": "latency"}, "where": {"where": "accuracy > 0.5"},
        "failed": {"status": "failed"}}.items()}
    _refit(any_store, any_make)
    failed_refit = dataclasses.replace(any_make.candidate("c-r2", store=False), status="failed",
                                       devices=(), onnx_sha256=None, refit_of="c-b")
    any_store.add_candidate(failed_refit, {})  # failed before any device: not in the early branch either
    for view, kwargs in {
        "all": {}, "npu": {"device": "npu"}, "top": {"top": 1}, "pareto": {"pareto": True},
        "pareto-latency": {"pareto": True, "policy": "latency"}, "where": {"where": "accuracy > 0.5"},
        "failed": {"status": "failed"}}.items():
        pd.testing.assert_frame_equal(leaderboard(any_store, **kwargs), before[view], obj=view)
    assert best_candidate(any_store) == "c-b" and best_candidate(any_store, device="npu") == "c-a"
    with pytest.raises(NotFoundError, match="devices present: npu, host-cpu|devices present: host-cpu, npu"):
        leaderboard(any_store, device="tpu")  # only the refit ran there
    stored = any_store.get_candidate("c-r")
    assert (stored.refit_of, stored.refit) == ("c-a", {"of": "c-a"})
    assert any_store.get_candidate("c-a").refit_of is None and any_store.get_candidate("c-a").refit is None
    assert any_store.get_candidate("c-r2").refit == {"of": "c-b"}  # none in the lineage: the column says
    assert {r.candidate_id for r in any_store.list_candidates("sw-1") if r.refit_of} == {"c-r", "c-r2"}
    with any_store.snapshot() as conn:
        metrics = schema.device_metrics
        sweeps = set(conn.execute(select(metrics.c.sweep_id).where(metrics.c.candidate_id == "c-r")).scalars())
    assert sweeps == {"sw-1"}  # no NULL trick: the refit's rows name their sweep


def test_a_refit_must_say_so_in_refit_of(any_store: Store, any_make) -> None:
    """A record whose lineage says "refit" but whose refit_of does not would be ranked: refused."""
    any_make.sweep()
    record = any_make.candidate("c-r", store=False)
    old_style = dataclasses.replace(record, lineage={**record.lineage, "refit": {"of": "c-a"}})
    with pytest.raises(ConfigError, match=r"lineage\['refit'\]\['of'\] = 'c-a' but refit_of = None.*refit_of='c-a'"):
        any_store.add_candidate(old_style, {record.onnx_sha256: any_make.fake_onnx("c-r")})
    with pytest.raises(ConfigError, match="refit_of must be the id of another candidate or None; got 'c-r'"):
        any_store.add_candidate(dataclasses.replace(record, refit_of="c-r"), {})
    assert any_store.list_candidates() == []


def test_sweep_devices_round_trip_in_order(any_store: Store, any_make) -> None:
    first = any_make.sweep("sw-1", devices=("npu", HOST_DEVICE))
    plain = any_make.sweep("sw-2")
    assert any_store.get_sweep("sw-1").devices == ("npu", HOST_DEVICE) == first.devices
    assert any_store.get_sweep("sw-2").devices == () == plain.devices
    bad = dataclasses.replace(first, sweep_id="sw-3")
    for devices in (("npu", "npu"), "npu", ("npu", 3)):
        with pytest.raises(ConfigError, match="devices must be a tuple of distinct device names"):
            any_store.create_sweep(dataclasses.replace(bad, devices=devices), [])  # type: ignore[arg-type]
    assert [s.sweep_id for s in any_store.list_sweeps()] == ["sw-2", "sw-1"]


def test_promotion_stores_decision(any_store: Store, any_make) -> None:
    any_make.sweep()
    any_make.candidate("c-1")
    decision = GateDecision("production", HOST_DEVICE, "2024-05-01T12:00:00+00:00", {}, {},
                            ModelSummary("c-1", "sw-1", HOST_DEVICE, 0.9, None, None, None),
                            (GateCheck("x", True, ""),))
    record = promote(any_store, "c-1", decision=decision)
    assert history(any_store)[0].decision == decision.to_json()
    assert history(any_store)[0].decision["checks"] == [{"check": "x", "passed": True, "detail": ""}]
    assert record.history_id >= 1


def test_policy_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key.*'speed'.*known keys: policy, objective"):
        policy_from_config({"speed": 1}, "[ranking]")
    with pytest.raises(ConfigError, match="must be one of accuracy, latency_ms"):
        policy_from_config({"objective": "f1"}, "[ranking]")
    with pytest.raises(ConfigError, match="max_latency_ms must be a number >= 0"):
        policy_from_config({"max_latency_ms": -1}, "[ranking]")
    with pytest.raises(ConfigError, match="allow_cpu_fallback must be true or false"):
        policy_from_config({"allow_cpu_fallback": "yes"}, "[ranking]")
    policy = policy_from_config({"policy": "latency", "min_accuracy": 0.5}, "[ranking]")
    assert policy.objective == "latency_ms" and policy.min_accuracy == 0.5


def test_a_snapshot_sees_one_state_while_another_connection_writes(any_store: Store,
                                                                   any_make) -> None:
    """Every statement in a snapshot reads the same state (a multi-statement reader such as
    the Pareto front must not see a writer's rows in one statement and not in the next)."""
    any_make.sweep("sw-1")
    any_make.candidate("c-1", accuracy=0.7)
    count = select(func.count()).select_from(schema.candidates)
    with any_store.snapshot() as conn:
        before = conn.execute(count).scalar_one()
        any_make.candidate("c-2", accuracy=0.8)  # committed by another connection meanwhile
        during = conn.execute(count).scalar_one()
    with any_store.snapshot() as conn:
        after = conn.execute(count).scalar_one()
    assert (before, during, after) == (1, 1, 2)
