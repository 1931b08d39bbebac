"""The loop's controller, one pass at a time, through the CLI (`shadow watch CONFIG --once`).

Real sweeps on Ray (the session's shared cluster), a real SQLite store and home, a tiny
separable dataset and a two-candidate grid, so each sweep takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selection.channels.promotion import current, history, promote
from selection.errors import ShadowError
from selection.home import Home
from selection.records import EventRecord
from selection.store import Store
from selection.testing import add_tiny_candidates
from shadow.data.catalog import find_manifest
from shadow.data.loader import load_dataset
from shadow.loop.controller import controller_lock
from shadow.loop.journal import REASON_PREFIX, check_consistency
from shadow.sweep.plan import new_sweep_id
from tests.bad_inputs.contract import REPO, assert_user_error, run_cli, shadow, snapshot
from tests.selection.conftest import backend_url  # noqa: F401  (fixture: SQLite, PostgreSQL)
from tests.shadow.conftest import separable_frame, write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SWEEP = """\
[sweep]
name = "watched"
dataset = "{dataset}"
seed = 1

[holdout]
rows = 60

[[slices]]
strategy = "all"

[model]
family = "mlp"

[model.params]
width = [4, 8]
epochs = 2

[watch]
channel = "production"
mode = "{mode}"

[watch.triggers]
new_rows = 50
"""


def setup(tmp_path: Path, mode: str) -> tuple[Path, Path, Path]:
    """A 300-row dataset, a sweep file watching it in ``mode``, and an empty home."""
    manifest = write_dataset(tmp_path / "catalog", separable_frame(n=300), name="toy")
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=manifest, mode=mode))
    return manifest, config, tmp_path / "home"


def watch(capsys: pytest.CaptureFixture[str], config: Path, home: Path,
          url: str | None = None) -> dict:
    store = ["--store", url] if url else []
    outcome = run_cli(capsys, "watch", str(config), "--once", "--home", str(home),
                      "--format", "json", *store)
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def events(home: Path, url: str | None = None) -> list[EventRecord]:
    """The channel's events, oldest first."""
    with Store.open(home, url=url, create=False) as store:
        return list(reversed(store.list_events(channel="production")))


def test_auto_mode_sweeps_promotes_then_waits_for_new_rows(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, config, home = setup(tmp_path, "auto")

    # Pass 1, no champion: the first sweep is due; the gate passes the first model.
    first = watch(capsys, config, home)
    assert first["action"] == "swept" and first["rows"] == 300
    assert [f["trigger"] for f in first["fired"]] == ["new_rows"]
    assert first["fired"][0]["evidence"] == {"no_champion": True}
    assert first["gate_passed"] is True and first["promoted_id"] == first["challenger_id"]
    log = events(home)
    assert [e.kind for e in log] == ["trigger", "sweep_started", "sweep_finished", "gate",
                                     "promotion"]
    assert [e.event_id for e in log] == first["event_ids"]
    assert {e.data_version for e in log} == {first["data_version"]}
    assert {e.sweep_id for e in log[1:]} == {first["sweep_id"]}
    assert log[2].evidence["status"] == "finished" and log[2].evidence["ok"] == 2
    assert log[3].evidence["passed"] is True and log[3].candidate_id == first["challenger_id"]
    with Store.open(home, create=False) as store:
        champion = current(store, "production")
        assert champion is not None and champion.candidate_id == first["promoted_id"]
        assert log[4].history_id == champion.history_id
        assert [s.sweep_id for s in store.list_sweeps()] == [first["sweep_id"]]

    # Pass 2, no new data: nothing fires, nothing is stored, nothing is swept.
    before = snapshot(home)
    second = watch(capsys, config, home)
    assert (second["action"], second["fired"], second["event_ids"]) == ("none", [], [])
    assert second["champion_id"] == first["promoted_id"] and second["live_total"] == 0
    assert snapshot(home)[0] == before[0]

    # A batch of 60 rows >= new_rows: the next pass sweeps the new version, scoring the
    # champion on those 60 rows (it never saw them) first.
    batch = tmp_path / "batch.csv"
    separable_frame(n=60, seed=7).to_csv(batch, index=False)
    assert run_cli(capsys, "data", "append", str(manifest), str(batch), "--home",
                   str(home)).code == 0
    third = watch(capsys, config, home)
    assert third["action"] == "swept" and third["rows"] == 360
    assert third["data_version"] != first["data_version"]
    assert third["data_version"] == load_dataset(find_manifest(str(manifest)),
                                                 Home(home.resolve())).fingerprint
    assert third["live_total"] == 60 and 0 < third["live_correct"] <= 60
    assert [f["trigger"] for f in third["fired"]] == ["new_rows"]
    assert third["fired"][0]["evidence"]["new_rows"] == 60
    assert third["sweep_id"] != first["sweep_id"]
    new = [e for e in events(home) if e.event_id in third["event_ids"]]
    assert [e.kind for e in new][:4] == ["trigger", "sweep_started", "sweep_finished", "gate"]
    assert [e.kind for e in new][4:] in ([], ["promotion"])  # the gate may refuse
    assert (third["promoted_id"] is not None) == (new[-1].kind == "promotion")
    assert {e.data_version for e in new} == {third["data_version"]}


def test_propose_mode_records_a_proposal_and_resumes_an_unfinished_sweep(
    tmp_path: Path, ray_local: None, backend_url: str | None,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = backend_url
    manifest, config, home = setup(tmp_path, "propose")
    version = load_dataset(find_manifest(str(manifest))).fingerprint
    # A controller stopped right after recording a sweep's start (before the sweep existed).
    stalled = new_sweep_id()
    with Store.open(home, url=url, create=True) as store:
        store.append_event(EventRecord(channel="production", kind="sweep_started",
                                       data_version=version, sweep_id=stalled, reason="stalled"))

    first = watch(capsys, config, home, url)
    assert (first["action"], first["sweep_id"], first["gate_passed"]) == ("resumed", stalled, True)
    assert first["promoted_id"] is None and first["proposal_event_id"] is not None
    log = events(home, url)
    assert [e.kind for e in log] == ["sweep_started", "sweep_resumed", "sweep_finished", "gate",
                                     "proposal"]
    assert log[-1].event_id == first["proposal_event_id"]
    assert log[-1].candidate_id == first["challenger_id"]
    with Store.open(home, url=url, create=False) as store:
        assert current(store, "production") is None  # propose changes no channel
        assert [s.sweep_id for s in store.list_sweeps()] == [stalled]  # never started twice
    assert not (home / "channels" / "production").exists()

    # Still no champion, so the first sweep stays due, but this version is swept: no second one.
    second = watch(capsys, config, home, url)
    assert second["action"] == "already_swept" and second["event_ids"] == []
    assert events(home, url) == log
    with Store.open(home, url=url, create=False) as store:
        assert [s.sweep_id for s in store.list_sweeps()] == [stalled]


def test_one_controller_per_channel(tmp_path: Path) -> None:
    _, config, home = setup(tmp_path, "auto")
    Store.open(home, create=True).close()
    before = snapshot(home)
    with controller_lock(Home(home.resolve()), "production"):
        # A second controller, a real process: fails at once, one line, exit 2.
        busy = shadow("watch", str(config), "--once", "--home", str(home))
        assert_user_error(busy, "one controller per channel", "already watched")
        continuous = shadow("watch", str(config), "--home", str(home))  # continuous: the same
        assert_user_error(continuous, "one controller per channel", "already watched")
    assert snapshot(home)[0] == before[0]


def test_continuous_mode_stops_cleanly_after_the_current_pass_on_sigterm(
    tmp_path: Path, ray_local: None,
) -> None:
    import ray

    _, config, home = setup(tmp_path, "auto")
    config.write_text(config.read_text().replace('mode = "auto"', 'mode = "auto"\npoll_s = 0.2'))
    address = ray.get_runtime_context().gcs_address
    controller = subprocess.Popen(
        [sys.executable, "-m", "shadow", "watch", str(config), "--home", str(home),
         "--address", address, "--format", "json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while controller.poll() is None and time.monotonic() < deadline:
            try:
                if any(e.kind == "sweep_started" for e in events(home)):
                    break
            except ShadowError:
                pass  # the store is not created yet
            time.sleep(0.02)
        controller.send_signal(signal.SIGTERM)  # mid-pass: the pass still runs to its end
        out, err = controller.communicate(timeout=240)  # a loaded machine: minutes
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait(timeout=30)
    assert controller.returncode == 0, err
    assert "SIGTERM: stopping after the current pass" in err
    log = events(home)
    assert [e.kind for e in log] == ["controller", "trigger", "sweep_started", "sweep_finished",
                                     "gate", "promotion", "controller"]
    assert [e.evidence["state"] for e in (log[0], log[-1])] == ["started", "stopped"]
    assert log[-1].evidence["passes"] == 1
    passes = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")]
    assert len(passes) == 1 and passes[0]["action"] == "swept"
    assert passes[0]["promoted_id"] == log[-2].candidate_id


def test_a_passed_gate_whose_promotion_is_in_history_is_not_promoted_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    manifest, config, home = setup(tmp_path, "auto")
    version = load_dataset(find_manifest(str(manifest))).fingerprint
    with Store.open(home, create=True) as store:
        add_tiny_candidates(store, ["c-1"])
        promote(store, "c-1", channel="production", reason="promoted by hand meanwhile")
        for kind in ("sweep_started", "sweep_finished", "gate"):
            store.append_event(EventRecord(
                channel="production", kind=kind, data_version=version, sweep_id="sw-tiny",
                candidate_id="c-1" if kind == "gate" else None, reason="a stopped pass",
                evidence={"passed": True} if kind == "gate" else {}))
        before = store.list_events(channel="production")

    # The gate passed and nothing followed, but the history holds c-1: nothing is repeated.
    result = watch(capsys, config, home)
    assert (result["action"], result["detail"]) == ("recovered", "already promoted")
    assert result["event_ids"] == [] and result["promoted_id"] == "c-1"
    with Store.open(home, create=False) as store:
        assert len(history(store, channel="production")) == 1
        assert store.list_events(channel="production") == before


def test_check_consistency_names_each_break_of_the_invariant(tmp_path: Path) -> None:
    with Store.open(tmp_path / "home", create=True) as store:
        add_tiny_candidates(store, ["c-1", "c-2"])
        assert check_consistency(store, "production") == []
        row = promote(store, "c-1", channel="production", reason=REASON_PREFIX + "sweep s")
        promote(store, "c-2", channel="production", reason="by hand")  # needs no event

        def add(kind: str, **ids: object) -> None:
            store.append_event(EventRecord(channel="production", kind=kind,  # type: ignore[arg-type]
                                           reason="test", **ids))  # type: ignore[arg-type]

        add("sweep_started", data_version="v1", sweep_id="s1")
        add("sweep_started", data_version="v1", sweep_id="s2")
        add("promotion", candidate_id="c-1", history_id=999)
        add("promotion", candidate_id="c-2", history_id=row.history_id)
        problems = check_consistency(store, "production")
    assert problems == [
        f"promotion event 4 names 'c-2' but history row {row.history_id} promoted 'c-1'",
        "promotion event 3 names history row 999, which does not exist",
        "data version v1 has 2 sweep_started events under one config",
    ]


def test_config_changed_sweeps_the_same_version_again_once(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str],
) -> None:
    _, config, home = setup(tmp_path, "auto")
    config.write_text(config.read_text().replace("new_rows = 50", "new_rows = 50\nconfig_changed = true"))
    first = watch(capsys, config, home)
    assert first["action"] == "swept"
    assert watch(capsys, config, home)["action"] == "none"  # nothing changed, no new rows
    # The sweep file changes (another grid), the data does not: one more sweep of this version.
    config.write_text(config.read_text().replace("width = [4, 8]", "width = [4, 6]"))
    again = watch(capsys, config, home)
    assert again["action"] == "swept" and again["data_version"] == first["data_version"]
    assert [f["trigger"] for f in again["fired"]] == ["config_changed"]
    assert again["sweep_id"] != first["sweep_id"]
    assert watch(capsys, config, home)["action"] == "none"  # and only once
    with Store.open(home, create=False) as store:
        assert check_consistency(store, "production") == []
        started = store.list_events(channel="production", kinds="sweep_started")
        assert len(started) == 2 and len({e.evidence["config_hash"] for e in started}) == 2
