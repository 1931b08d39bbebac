"""A controller killed with SIGKILL at points spanning its pass, then restarted: nothing is lost,
nothing is repeated.

Each case runs a real ``shadow watch CONFIG --once`` process (its own session, so its process
group is ours to kill), SIGKILLs it when the event log shows a given step (or after a fixed
delay), then runs the pass again to the end. The doomed process joins this test session's Ray
cluster with ``--address`` (as the sweep-resume test's driver does), so killing it leaves no
private raylet behind; Ray ends the dead driver's tasks itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selection.channels.promotion import current, history
from selection.errors import ShadowError
from selection.store import Store
from shadow.loop.journal import check_consistency
from tests.bad_inputs.contract import REPO
from tests.shadow.loop.test_controller import events, setup, watch

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Kill points: a delay in seconds (before the process has stored anything), or the event kind
#: whose appearance in the log triggers the kill.
KILL_POINTS = [0.3, "trigger", "sweep_started", "sweep_finished", "gate"]


def kinds_stored(home: Path) -> set[str]:
    """Event kinds the doomed controller has stored so far (none while it creates the store)."""
    try:
        with Store.open(home, create=False) as store:
            return {e.kind for e in store.list_events(channel="production")}
    except ShadowError:
        return set()


def kill_when(driver: subprocess.Popen[bytes], home: Path, point: float | str) -> None:
    deadline = time.monotonic() + 60
    if isinstance(point, float):
        time.sleep(point)
    else:
        while (point not in kinds_stored(home) and driver.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
    if driver.poll() is None:
        os.killpg(driver.pid, signal.SIGKILL)  # its own session: only what we started
    driver.wait(timeout=30)


@pytest.mark.parametrize("point", KILL_POINTS, ids=str)
def test_a_controller_killed_anywhere_resumes_without_loss_or_duplicate(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str], point: float | str,
) -> None:
    import ray

    _, config, home = setup(tmp_path, "auto")
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "shadow", "watch", str(config), "--once", "--home", str(home),
         "--address", address, "--format", "json"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        kill_when(driver, home, point)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    before = kinds_stored(home)

    # The restarted controller finishes the pass the killed one began.
    done = watch(capsys, config, home)
    assert done["gate_passed"] is True, (before, done)
    if "sweep_started" in before and "sweep_finished" not in before:
        assert done["action"] == "resumed"
    elif "sweep_finished" in before and "promotion" not in before:
        assert done["action"] == "recovered"
    # A third pass has nothing left to do (no new rows, the champion serves).
    again = watch(capsys, config, home)
    assert again["action"] == "none" and again["event_ids"] == []

    log = events(home)
    with Store.open(home, create=False) as store:
        assert check_consistency(store, "production") == []
        sweeps = store.list_sweeps()
        rows = history(store, channel="production")
        champion = current(store, "production")
    assert len(sweeps) == 1, f"duplicated sweeps after a kill at {point}: {sweeps}"
    assert [e.sweep_id for e in log if e.kind == "sweep_started"] == [sweeps[0].sweep_id]
    assert len(rows) == 1 and rows[0].action == "promote", rows
    promotions = [e for e in log if e.kind == "promotion"]
    assert [(e.history_id, e.candidate_id) for e in promotions] == [
        (rows[0].history_id, rows[0].candidate_id)]
    assert champion is not None and champion.history_id == rows[0].history_id
    assert [e.kind for e in log].count("gate") == 1
    assert (home / "channels" / "production").is_symlink()
