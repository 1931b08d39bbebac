"""A driver killed with SIGKILL mid-sweep; `--resume` finishes the sweep without
recomputing or duplicating what was already stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selection.errors import ShadowError
from selection.leaderboard.frame import leaderboard
from selection.store import Store
from shadow.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]

CONFIG = """
[sweep]
dataset = "noaa-weather"
[holdout]
rows = 365
[[slices]]
strategy = "window"
size = 3000
stride = 1000
count = 6
[model]
family = "mlp"
[model.params]
width = [16, 32]
epochs = 8
"""


def stored_count(home: Path) -> int:
    """Candidates the other driver has stored so far (0 while it is still creating the store)."""
    try:
        with Store.open(home, create=False) as store:
            sweep_id = store.latest_sweep_id()
            return len(store.candidate_ids(sweep_id)) if sweep_id else 0
    except ShadowError:
        return 0


def test_killed_driver_then_resume(tmp_path, ray_local, capsys):
    import ray

    config = tmp_path / "resume.toml"
    config.write_text(CONFIG)
    home = tmp_path / "home"
    # The doomed driver joins this session's Ray cluster, as a second driver would.
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "shadow", "sweep", "run", str(config), "--home", str(home),
         "--address", address, "--quiet"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while stored_count(home) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read() if driver.stderr else ""

    with Store.open(home, create=False) as store:
        sweep_id = store.latest_sweep_id()
        sweep = store.get_sweep(sweep_id)
        before = store.candidate_ids(sweep_id)
        stored_before = {cid: store.get_candidate(cid).created_at for cid in before}
    assert sweep.status == "running"  # the driver never got to say otherwise
    assert 2 <= len(before) < sweep.n_planned == 12

    code = main(["sweep", "run", str(config), "--home", str(home), "--resume", sweep_id,
                 "--format", "json", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["skipped"] == len(before)
    assert summary["planned"] + summary["skipped"] == 12

    with Store.open(home, create=False) as store:
        board = leaderboard(store, sweep=sweep_id)
        assert store.get_sweep(sweep_id).status == "finished"
        # Finished candidates were not recomputed: same rows, same timestamps.
        assert {cid: store.get_candidate(cid).created_at for cid in before} == stored_before
    assert len(board) == 12 and board["candidate_id"].is_unique
    assert (board["status"] == "ok").all()


def test_resume_refuses_a_changed_config(tmp_path, swept, capsys):
    home, info = swept
    changed = tmp_path / "changed.toml"
    changed.write_text(info["config"].read_text().replace("epochs = 3", "epochs = 4"))
    code = main(["sweep", "run", str(changed), "--home", str(home), "--resume", info["sweep_id"]])
    assert code == 2
    assert "cannot resume sweep" in capsys.readouterr().err
