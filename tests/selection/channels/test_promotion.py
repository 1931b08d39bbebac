"""Promotion, rollback, history and the files an edge app reads."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import selection.channels.promotion as promotion_module
from selection import (
    DEFAULT_CHANNEL,
    HOST_DEVICE,
    ConfigError,
    DeviceResult,
    IntegrityError,
    NotFoundError,
    PromotionError,
    Store,
    current,
    history,
    promote,
    read_manifest,
    rollback,
    sha256_bytes,
    sync_channel,
)
from selection.gate.record import GateCheck, GateDecision, ModelSummary


def _production_sha(store: Store) -> str:
    return sha256_bytes((store.home.channel_dir(DEFAULT_CHANNEL) / "model.onnx").read_bytes())


def _all_entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def three(store: Store, make) -> list:
    make.sweep()
    return [make.candidate(f"c-{i}", accuracy=0.5 + i / 10) for i in (1, 2, 3)]


def test_promote_writes_model_and_manifest(store: Store, three) -> None:
    c1 = three[0]
    record = promote(store, "c-1", who="ann@box", reason="first model")
    link = store.home.channel_dir("production")
    assert link.is_symlink()
    assert os.readlink(link) == f".versions/production-{record.history_id}-{c1.onnx_sha256[:12]}"
    assert _production_sha(store) == c1.onnx_sha256
    manifest = read_manifest(store.home, "production")
    assert manifest is not None
    assert {k: manifest[k] for k in ("channel", "candidate_id", "sweep_id", "device", "sha256",
                                     "promoted_by", "reason", "history_id")} == {
        "channel": "production", "candidate_id": "c-1", "sweep_id": "sw-1",
        "device": HOST_DEVICE, "sha256": c1.onnx_sha256, "promoted_by": "ann@box",
        "reason": "first model", "history_id": record.history_id}
    assert manifest["size_bytes"] == len(store.artifacts.read_verified(c1.onnx_sha256))
    assert manifest["metrics"]["accuracy"] == pytest.approx(0.6)
    # The fixture's lineage uses the long spelling (read, never written); the manifest
    # carries the signature as ModelSignature writes it.
    assert manifest["model_io"] == {"input": "x", "output": None,
                                    "features": ["temp", "humidity"],
                                    "classes": ["dry", "rain"], "target": None,
                                    "input_shape": None}
    assert manifest["promoted_at"] == record.at.isoformat(timespec="microseconds")
    assert (record.action, record.candidate_id, record.previous_candidate_id) == ("promote", "c-1", None)
    assert current(store, "production") == record


def test_symlink_swap_leaves_no_temp_files(store: Store, three) -> None:
    promote(store, "c-1")
    promote(store, "c-2")
    channels = store.home.channels_dir
    entries = _all_entries(channels)
    assert not [e for e in entries if ".tmp" in e]
    assert "production" in entries
    versions = sorted(os.listdir(channels / ".versions"))
    assert len(versions) == 2  # the old version is kept
    for version in versions:
        assert sorted(os.listdir(channels / ".versions" / version)) == [
                "manifest.json", "manifest.sig", "model.onnx"]


def test_history_newest_first_and_per_channel(store: Store, three) -> None:
    first = promote(store, "c-1")
    second = promote(store, "c-2", reason="better")
    canary = promote(store, "c-3", channel="canary")
    assert [h.history_id for h in history(store)] == [canary.history_id, second.history_id, first.history_id]
    prod = history(store, channel="production")
    assert [h.candidate_id for h in prod] == ["c-2", "c-1"]
    assert prod[0].previous_candidate_id == "c-1"
    assert prod[0].previous_sha256 == three[0].onnx_sha256
    assert prod[0].reason == "better"
    assert (store.home.channel_dir("canary") / "model.onnx").is_file()


def test_rollback_is_a_stack(store: Store, three) -> None:
    shas = [c.onnx_sha256 for c in three]
    p1 = promote(store, "c-1")
    p2 = promote(store, "c-2")
    p3 = promote(store, "c-3")
    assert _production_sha(store) == shas[2]
    r1 = rollback(store, reason="regression")
    assert (r1.action, r1.candidate_id, r1.reverts_id) == ("rollback", "c-2", p3.history_id)
    assert (r1.previous_candidate_id, r1.previous_sha256) == ("c-3", shas[2])
    assert _production_sha(store) == shas[1]
    assert read_manifest(store.home, "production")["candidate_id"] == "c-2"
    r2 = rollback(store)
    assert (r2.candidate_id, r2.reverts_id) == ("c-1", p2.history_id)
    assert _production_sha(store) == shas[0]
    assert current(store, "production") == r2
    # A new promote after rollbacks is undone first, then older ones resume.
    promote(store, "c-3")
    assert rollback(store).candidate_id == "c-1"
    assert p1.history_id < r2.history_id


def test_rollback_with_nothing_earlier_changes_nothing(store: Store, three) -> None:
    promote(store, "c-1")
    before_history = history(store)
    before_files = {p: p.read_bytes() for p in store.home.channels_dir.rglob("*") if p.is_file()}
    before_link = os.readlink(store.home.channel_dir("production"))
    with pytest.raises(PromotionError, match="nothing earlier to roll back to"):
        rollback(store)
    assert history(store) == before_history
    assert os.readlink(store.home.channel_dir("production")) == before_link
    assert {p: p.read_bytes() for p in store.home.channels_dir.rglob("*") if p.is_file()} == before_files
    # Two promotions, two rollbacks: the second one hits the bottom of the stack.
    promote(store, "c-2")
    rollback(store)
    with pytest.raises(PromotionError, match="nothing earlier"):
        rollback(store)
    assert _production_sha(store) == three[0].onnx_sha256


def test_rollback_of_never_promoted_channel(store: Store, three) -> None:
    with pytest.raises(NotFoundError, match="channel 'production' has never been promoted"):
        rollback(store)
    assert not store.home.channel_dir("production").exists()


def test_promoting_a_failed_device_row_is_refused(store: Store, make) -> None:
    make.sweep()
    sha = make.candidate("c-x", store=False).onnx_sha256
    make.candidate("c-x", devices=(
        DeviceResult(HOST_DEVICE, "ok", accuracy=0.9, artifact_sha256=sha),
        DeviceResult("npu", "failed", error="op Erf not supported"),
    ))
    with pytest.raises(PromotionError,
                       match=r"status 'failed' on device 'npu' \(op Erf not supported\).*another candidate"):
        promote(store, "c-x", device="npu")
    with pytest.raises(PromotionError, match=r"no result for device 'gpu' \(devices: host-cpu, npu\)"):
        promote(store, "c-x", device="gpu")
    assert history(store) == []
    assert not store.home.channel_dir("production").exists()


def test_promoting_unknown_candidate(store: Store, three) -> None:
    with pytest.raises(NotFoundError, match="no candidate 'c-9'"):
        promote(store, "c-9")


def test_tampered_artifact_is_refused_and_production_unchanged(store: Store, three) -> None:
    promote(store, "c-1")
    model_before = (store.home.channel_dir("production") / "model.onnx").read_bytes()
    store.artifacts.path(three[1].onnx_sha256).write_bytes(b"evil bytes")
    with pytest.raises(IntegrityError, match="tampered"):
        promote(store, "c-2")
    assert (store.home.channel_dir("production") / "model.onnx").read_bytes() == model_before
    assert [h.candidate_id for h in history(store)] == ["c-1"]


def test_promoting_the_current_model_is_refused(store: Store, three) -> None:
    promote(store, "c-1")
    with pytest.raises(PromotionError, match="already in production; nothing to do"):
        promote(store, "c-1")
    assert len(history(store)) == 1


@pytest.mark.parametrize("bad", ["Production", "", "-x", "a/b", "../x", "x" * 65])
def test_bad_channel_names(store: Store, three, bad: str) -> None:
    with pytest.raises(ConfigError, match="a channel name must be"):
        promote(store, "c-1", channel=bad)


def test_decision_and_default_who_are_recorded(store: Store, three) -> None:
    decision = GateDecision(
        DEFAULT_CHANNEL, HOST_DEVICE, "2024-05-01T12:00:00+00:00", {"name": "default"}, {"alpha": 0.05},
        ModelSummary("c-1", "sw-1", HOST_DEVICE, 0.9, 1.0, 100, "a" * 64),
        (GateCheck("constraints", True, "meets the ranking policy 'default'"),))
    record = promote(store, "c-1", decision=decision)
    assert "@" in record.who
    # Stored as the decision's JSON, read back as the same record.
    assert history(store)[0].decision == decision.to_json() == record.decision
    assert GateDecision.from_json(history(store)[0].decision) == decision
    promote(store, "c-2")  # a promotion that did not go through the gate stores no decision
    assert history(store)[0].decision == {}


def test_sync_channel_repairs_a_crash_between_commit_and_swap(store: Store, three, monkeypatch) -> None:
    promote(store, "c-1")

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies after the commit

    monkeypatch.setattr(promotion_module, "point_channel", crash)  # the swap after the commit
    with pytest.raises(KeyboardInterrupt):
        promote(store, "c-2")
    monkeypatch.undo()
    assert current(store, "production").candidate_id == "c-2"  # the DB is the truth
    assert _production_sha(store) == three[0].onnx_sha256  # files lag behind
    sync_channel(store, "production")
    assert _production_sha(store) == three[1].onnx_sha256
    assert read_manifest(store.home, "production")["candidate_id"] == "c-2"


def test_sync_channel_repairs_damaged_and_half_written_versions(store: Store, three) -> None:
    record = promote(store, "c-1")
    version = store.home.channel_dir("production").resolve()
    (version / "model.onnx").write_bytes(b"trunc")
    (version / "manifest.json").unlink()
    sync_channel(store, "production")
    assert _production_sha(store) == three[0].onnx_sha256
    assert read_manifest(store.home, "production")["history_id"] == record.history_id
    # A leftover, half-written directory under the name the next promotion uses.
    next_id = record.history_id + 1
    leftover = store.home.channels_dir / ".versions" / f"production-{next_id}-{three[1].onnx_sha256[:12]}"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"half")
    promote(store, "c-2")
    assert _production_sha(store) == three[1].onnx_sha256
    assert json.loads((leftover / "manifest.json").read_text())["candidate_id"] == "c-2"


def test_same_candidate_on_another_device_is_a_change(store: Store, make) -> None:
    make.sweep()
    base = make.candidate("c-q", store=False)
    quantized = make.fake_onnx("c-q-int8")
    q_sha = sha256_bytes(quantized)
    record = dataclasses.replace(base, devices=(
        dataclasses.replace(base.devices[0]),
        DeviceResult("npu", "ok", accuracy=0.88, latency_ms=0.3, artifact_sha256=q_sha),
    ))
    store.add_candidate(record, {base.onnx_sha256: make.fake_onnx("c-q"), q_sha: quantized})
    promote(store, "c-q")
    promoted = promote(store, "c-q", device="npu")
    assert promoted.sha256 == q_sha and _production_sha(store) == q_sha
    back = rollback(store)
    assert (back.device, back.sha256) == (HOST_DEVICE, base.onnx_sha256)
    assert read_manifest(store.home, "production")["device"] == HOST_DEVICE


def test_rollback_to_a_tampered_model_is_refused_and_changes_nothing(store: Store, three) -> None:
    promote(store, "c-1")
    promote(store, "c-2")
    before = (history(store), os.readlink(store.home.channel_dir("production")))
    store.artifacts.path(three[0].onnx_sha256).write_bytes(b"evil bytes")
    with pytest.raises(IntegrityError, match="tampered"):
        rollback(store)
    assert (history(store), os.readlink(store.home.channel_dir("production"))) == before
    assert _production_sha(store) == three[1].onnx_sha256


def test_a_second_change_while_one_holds_the_channel_is_refused(store: Store, three) -> None:
    from selection.channels.files import channel_lock

    promote(store, "c-1")
    with channel_lock(store.home, "production"):
        with pytest.raises(PromotionError, match=r"one change at a time per channel: channel "
                           r"'production' is being changed by another process \(pid \d+\); "
                           "nothing was changed"):
            promote(store, "c-2")
        with pytest.raises(PromotionError, match="one change at a time"):
            rollback(store)
        promote(store, "c-2", channel="canary")  # other channels are not blocked
    assert [h.candidate_id for h in history(store, channel="production")] == ["c-1"]
    promote(store, "c-2")  # the lock died with its holder's `with`


def test_repeating_a_promote_whose_swap_was_lost_repairs_the_files(store: Store, three, monkeypatch) -> None:
    promote(store, "c-1")
    monkeypatch.setattr(promotion_module, "point_channel", lambda *a: None)  # killed before the swap
    promote(store, "c-2")
    monkeypatch.undo()
    assert _production_sha(store) == three[0].onnx_sha256
    with pytest.raises(PromotionError, match="already in production; nothing to do; its files "
                       "lagged behind the database .* were brought up to date"):
        promote(store, "c-2")
    assert _production_sha(store) == three[1].onnx_sha256


def test_list_channels(store: Store, three) -> None:
    promote(store, "c-1")
    promote(store, "c-2", channel="canary")
    assert [(r.channel, r.candidate_id) for r in promotion_module.list_channels(store)] == [
        ("canary", "c-2"), ("production", "c-1")]


def test_an_unusable_signing_key_refuses_before_anything_changes(store: Store, three) -> None:
    # The first promotion creates the home's key; a key others can read must then
    # refuse the next promotion (and its dry run) up front, with no history row written.
    from selection.signing import KeyPaths, SigningKeyError

    promote(store, "c-1", reason="first")
    keys = KeyPaths.of(store.home.root)
    public_before = keys.public.read_bytes()
    os.chmod(keys.private, 0o644)
    before = history(store)
    with pytest.raises(SigningKeyError, match="must be readable by its owner only"):
        promotion_module.verify_promotion(store, "c-2")
    with pytest.raises(SigningKeyError, match="must be readable by its owner only"):
        promote(store, "c-2", reason="second")
    assert history(store) == before
    assert keys.public.read_bytes() == public_before
    assert _production_sha(store) == three[0].onnx_sha256


def test_the_event_hook_commits_with_the_history_row(store: Store, three) -> None:
    from selection.records import EventRecord

    def event(record) -> EventRecord:
        return EventRecord(channel=record.channel, kind="promotion", reason="hook",
                           candidate_id=record.candidate_id, history_id=record.history_id)

    record = promote(store, "c-1", event=event)
    [stored] = store.list_events(channel=DEFAULT_CHANNEL)
    assert (stored.kind, stored.history_id, stored.candidate_id) == ("promotion", record.history_id,
                                                                     "c-1")
    assert record.history_id > 0

    # A hook whose event cannot be stored rolls the history row back with it: nothing changes.
    def bad(record) -> EventRecord:
        return EventRecord(channel=record.channel, kind="promotion", reason="bad",
                           evidence={"not json": object()})

    with pytest.raises(ConfigError):
        promote(store, "c-2", event=bad)
    assert [r.history_id for r in history(store)] == [record.history_id]
    assert current(store).candidate_id == "c-1"
    assert len(store.list_events(channel=DEFAULT_CHANNEL)) == 1
    # A refused promotion (already the channel's model) never calls the hook.
    with pytest.raises(PromotionError):
        promote(store, "c-1", event=bad)
    assert len(store.list_events(channel=DEFAULT_CHANNEL)) == 1
