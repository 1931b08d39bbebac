"""Staged rollouts: the canary share first, widening, and the automatic rollback of a worse canary.

Real devices (RemoteChannelRuntime threads with their own prediction logs)
answer real requests; their labels come back through the live log
(``selection.live``) and reach the server as counts on each poll.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selection import promote
from selection.errors import ConfigError
from selection.fleet.devices import DeviceRegistry
from selection.fleet.evidence import Arm, judge, p_lower
from selection.fleet.rollout import RolloutPlan, load_rollout, parse_canary, start_event
from selection.live.feedback import parse_feedback
from selection.runtime import load_model_bytes
from selection.testing import tiny_classifier
from tests.selection.fleet.conftest import Fleet
from tests.selection.fleet.test_faults import REPO
from tests.selection.fleet.test_serve_follow import wait_for


def test_the_test_rolls_back_only_on_enough_evidence() -> None:
    good, bad = Arm(1000, 0, 300, 270), Arm(1000, 0, 300, 200)
    assert judge(bad, good, alpha=0.01, min_labelled=200, min_predictions=100).action == "rollback"
    assert judge(good, good, alpha=0.01, min_labelled=200, min_predictions=100).action == "widen"
    # The same gap on fewer labels than the minimum: wait, never judge on a handful.
    few = judge(Arm(100, 0, 30, 20), Arm(100, 0, 30, 27), alpha=0.01, min_labelled=200,
                min_predictions=100)
    assert few.action == "wait" and "200 each" in few.reason
    errors = judge(Arm(500, 40, 0, 0), Arm(500, 0, 0, 0), alpha=0.01, min_labelled=200,
                   min_predictions=100)
    assert errors.action == "rollback" and "errors rose" in errors.reason
    assert p_lower(50, 100, 50, 100) == pytest.approx(0.5)
    assert p_lower(0, 0, 5, 10) == 1.0


def test_canary_flags_are_checked() -> None:
    assert parse_canary("10%") == (0.1, ())
    assert parse_canary("0.25") == (0.25, ())
    assert parse_canary("robot-1,robot-7") == (0.0, ("robot-1", "robot-7"))
    for bad in ("200%", "0", "bad id!"):
        with pytest.raises(ConfigError):
            parse_canary(bad)


def _teacher_labels(rows: np.ndarray) -> list[str]:
    """Ground truth for the test: what c-a (the first champion) predicts."""
    teacher = load_model_bytes(tiny_classifier(1000), candidate_id="teacher")
    return [("dry", "rain")[i] for i in teacher.run(rows).argmax(axis=1)]


def test_a_worse_canary_is_rolled_back_by_itself(fleet: Fleet) -> None:
    ids = [f"dev-{i}" for i in range(6)]
    devices = [fleet.device(d, log=fleet.tmp / "logs" / f"{d}.db") for d in ids]
    for device in devices:
        device.start()
    try:
        plan = RolloutPlan(devices=tuple(ids[:3]), share=0.0, widen_after_s=3600,
                           min_labelled=60, min_predictions=60)
        promote(fleet.store, "c-c", event=start_event(plan))  # c-c agrees with c-a ~40 %
        wait_for(lambda: all(d.model.candidate_id == "c-c" for d in devices[:3]))
        assert all(d.model.candidate_id == "c-a" for d in devices[3:])  # the rest stay
        rng = np.random.default_rng(1)
        for _ in range(200):
            rows = rng.normal(size=(10, 8)).astype(np.float32)
            labels = _teacher_labels(rows)
            for device in devices:
                answers = [device.predict({"rows": [r.tolist()]}) for r in rows]
                assert device.log is not None
                device.log.add_feedback(parse_feedback([
                    {"request_id": a["request_id"], "label": y}
                    for a, y in zip(answers, labels, strict=True)]))
            rollout = load_rollout(fleet.store, "production")
            if rollout is not None and rollout.state == "rolled_back":
                break
        rollout = load_rollout(fleet.store, "production")
        assert rollout is not None and rollout.state == "rolled_back"
        wait_for(lambda: all(d.model.candidate_id == "c-a" for d in devices))
        [back] = [e for e in fleet.store.list_events(channel="production", kinds="rollout")
                  if e.evidence["action"] == "rollback"]
        assert back.evidence["canary"]["labelled"] >= 60
        assert back.evidence["p_worse_accuracy"] < 0.01
        assert "rolled back" in back.reason and back.history_id == 3
        history = fleet.store.list_events(channel="production", kinds="rollout")
        steps = [e.evidence["action"] for e in reversed(history)]
        assert steps[0] == "start" and steps[-1] == "rollback"
        assert set(steps[1:-1]) <= {"look"}  # the planned looks before the one that rolled back
    finally:
        for device in devices:
            device.stop()
            assert device.log is not None
            device.log.close()


def test_a_rollout_widens_on_schedule_to_every_device(fleet: Fleet) -> None:
    ids = [f"dev-{i}" for i in range(8)]
    devices = [fleet.device(d) for d in ids]
    for device in devices:
        device.start()
    try:
        plan = RolloutPlan(share=0.25, stages=(0.5, 1.0), widen_after_s=0.5, widen_on="time")
        promote(fleet.store, "c-b", event=start_event(plan))
        rollout = load_rollout(fleet.store, "production")
        assert rollout is not None and rollout.state == "canary"
        canary = {d for d in ids if rollout.in_canary(d)}
        assert canary != set(ids)
        wait_for(lambda: all(d.model.candidate_id == "c-b" for d in devices), 20)
        wait_for(lambda: load_rollout(fleet.store, "production").state == "complete")  # type: ignore[union-attr]
        actions = [e.evidence["action"] for e in reversed(
            fleet.store.list_events(channel="production", kinds="rollout"))]
        assert actions == ["start", "widen", "complete"]
    finally:
        for device in devices:
            device.stop()


def test_cli_promote_canary_and_fleet_list(fleet: Fleet) -> None:
    home = str(fleet.store.home.root)

    def shadow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shadow", *args, "--home", home],
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    for share in ("150%", "100%"):  # 100 %: no control arm left to compare with
        bad = shadow("promote", "c-b", "--canary", share, "--force", "--reason", "t")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
        assert "--canary" in bad.stderr
    with fleet.device("dev-1"):
        done = shadow("promote", "c-b", "--canary", "dev-1", "--force", "--reason", "canary")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: fleet.server.registry.devices()[0].running is not None
                 and "production-2-" in str(fleet.server.registry.devices()[0].running))
        fleet.server.registry.save(force=True)
        listed = shadow("fleet", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    import json

    [row] = json.loads(listed.stdout)
    assert row["device_id"] == "dev-1" and row["canary"] is True and row["in_sync"] is True
    assert row["rollout"] == "canary"
    exposed = subprocess.run(
        [sys.executable, "-m", "shadow", "fleet", "serve", "--host", "0.0.0.0", "--home", home],
        capture_output=True, text=True, cwd=REPO, timeout=60, env={"PATH": "/usr/bin"})
    assert exposed.returncode == 2 and "token" in exposed.stderr
    assert len(exposed.stderr.strip().splitlines()) == 1


def test_a_canary_is_judged_on_what_happened_since_it_started(tmp_path: Path) -> None:
    sha = "ab" * 32
    registry = DeviceRegistry(tmp_path / "fleet.json", save_every_s=0)
    registry.seen("d1", running="v", offered="v", address="127.0.0.1",
                  counts={sha: [10, 0, 10, 2]})  # a bad week before the rollout
    assert registry.mark(7) and not registry.mark(7)
    registry.seen("d1", running="v", offered="v", address="127.0.0.1",
                  counts={sha: [20, 1, 20, 12]})
    registry.seen("d2", running="v", offered="v", address="127.0.0.1",
                  counts={sha: [5, 0, 5, 5]})  # first seen after the mark: all of it counts
    assert registry.arm(sha, since=7) == Arm(15, 1, 15, 15)
    assert registry.arm(sha) == Arm(25, 1, 25, 17)
    registry.save(force=True)
    assert DeviceRegistry(tmp_path / "fleet.json").arm(sha, since=7) == Arm(15, 1, 15, 15)


def _add_twin(fleet: Fleet, candidate_id: str) -> None:
    """A candidate computing exactly what c-a computes, in other bytes (another sha256)."""
    import onnx

    from selection.artifacts.content import sha256_bytes
    from selection.records import HOST_DEVICE, CandidateRecord, DeviceResult

    model = onnx.load_from_string(tiny_classifier(1000))
    model.graph.name = "twin-of-c-a"
    data = model.SerializeToString()
    sha = sha256_bytes(data)
    first = fleet.store.get_candidate("c-a")
    fleet.store.add_candidate(CandidateRecord(
        candidate_id=candidate_id, sweep_id=first.sweep_id, slice_id="all", family="mlp",
        params={"hidden": 16}, seed=1000, status="ok", onnx_sha256=sha, lineage=first.lineage,
        devices=(DeviceResult(HOST_DEVICE, "ok", accuracy=0.7, latency_ms=0.01,
                              size_bytes=len(data), artifact_sha256=sha),)), {sha: data})


def test_a_canary_as_good_as_the_champion_widens_on_evidence(fleet: Fleet) -> None:
    _add_twin(fleet, "c-twin")
    ids = [f"dev-{i}" for i in range(4)]
    devices = [fleet.device(d, log=fleet.tmp / "logs" / f"{d}.db") for d in ids]
    for device in devices:
        device.start()
    try:
        plan = RolloutPlan(devices=tuple(ids[:2]), share=0.0, stages=(1.0,), widen_after_s=0,
                           min_labelled=50, min_predictions=50)
        promote(fleet.store, "c-twin", event=start_event(plan))
        wait_for(lambda: all(d.model.candidate_id == "c-twin" for d in devices[:2]))
        rng = np.random.default_rng(2)
        for _ in range(100):
            rows = rng.normal(size=(10, 8)).astype(np.float32)
            labels = _teacher_labels(rows)
            for device in devices:
                answers = [device.predict({"rows": [r.tolist()]}) for r in rows]
                assert device.log is not None
                device.log.add_feedback(parse_feedback([
                    {"request_id": a["request_id"], "label": y}
                    for a, y in zip(answers, labels, strict=True)]))
            rollout = load_rollout(fleet.store, "production")
            if rollout is not None and rollout.state != "canary":
                break
        rollout = load_rollout(fleet.store, "production")
        assert rollout is not None and rollout.state == "complete", rollout
        [done] = [e for e in fleet.store.list_events(channel="production", kinds="rollout")
                  if e.evidence["action"] == "complete"]
        assert done.evidence["verdict"] == "widen" and done.evidence["canary"]["labelled"] >= 50
        wait_for(lambda: all(d.model.candidate_id == "c-twin" for d in devices))
    finally:
        for device in devices:
            device.stop()
            assert device.log is not None
            device.log.close()


def test_an_automatic_rollback_reverts_only_its_own_rollout(fleet: Fleet) -> None:
    """An operator's promotion between the control thread's read and its rollback is kept."""
    from selection.channels.promotion import current
    from selection.errors import PromotionError  # RolloutSuperseded's base
    from selection.fleet.rollout import roll_back
    from selection.testing import add_tiny_candidates

    add_tiny_candidates(fleet.store, ["c-d"], sweep_id="sw-more", hidden=8)
    promote(fleet.store, "c-b")
    promote(fleet.store, "c-c", event=start_event(RolloutPlan(share=0.2)))
    read = load_rollout(fleet.store, "production")  # what the control thread read at its tick
    assert read is not None and read.state == "canary"
    promote(fleet.store, "c-d")  # the operator, in between
    with pytest.raises(PromotionError, match="superseded"):
        roll_back(fleet.store, read, "canary worse", {})
    now = current(fleet.store, "production")
    assert now is not None and now.candidate_id == "c-d"  # before the fix: c-c, the worse one
    after = load_rollout(fleet.store, "production")
    assert after is not None and after.state == "superseded"
    # A second server (or a retried tick) acting on the same read refuses too, changing nothing.
    with pytest.raises(PromotionError):
        roll_back(fleet.store, read, "canary worse", {})
    now = current(fleet.store, "production")
    assert now is not None and now.candidate_id == "c-d"  # before the fix: c-c again... then c-b
    steps = [e.evidence["action"] for e in fleet.store.list_events(channel="production",
                                                                    kinds="rollout")]
    assert steps == ["superseded", "start"]


def test_a_rollout_is_rolled_back_once(fleet: Fleet) -> None:
    from selection.channels.promotion import current
    from selection.errors import PromotionError
    from selection.fleet.rollout import roll_back

    promote(fleet.store, "c-b")
    promote(fleet.store, "c-c", event=start_event(RolloutPlan(share=0.2)))
    read = load_rollout(fleet.store, "production")
    assert read is not None
    roll_back(fleet.store, read, "canary worse", {})
    now = current(fleet.store, "production")
    assert now is not None and now.candidate_id == "c-b"
    with pytest.raises(PromotionError, match="already closed"):
        roll_back(fleet.store, read, "canary worse", {})  # before the fix: back to c-a
    now = current(fleet.store, "production")
    assert now is not None and now.candidate_id == "c-b"


def test_canary_100_percent_is_refused() -> None:
    with pytest.raises(ConfigError, match="promote without --canary"):
        parse_canary("100%")
    with pytest.raises(ConfigError, match="promote without --canary"):
        RolloutPlan(share=1.0)
