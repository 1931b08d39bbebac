"""The sweep on a real multi-node Ray cluster, and a worker process killed mid-task."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from selection.store import Store
from shadow.sweep import config_from_dict, prepare_sweep, run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def config(epochs: int, windows: int) -> dict:
    return {
        "sweep": {"dataset": "noaa-weather"},
        "holdout": {"rows": 365},
        "slices": [{"strategy": "window", "size": 2000, "stride": 500, "count": windows}],
        "model": {"family": "mlp", "params": {"width": [8, 16], "epochs": epochs}},
    }


def test_candidates_run_on_both_nodes(tmp_path: Path, ray_local: None):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    prepared = prepare_sweep(config_from_dict(config(epochs=3, windows=4)))
    with Store.open(tmp_path / "home") as store:
        summary = run_sweep(prepared, store)
        records = store.list_candidates(prepared.sweep_id)
    assert summary.ok == 8 and summary.failed == 0
    nodes = {r.lineage["worker"]["node_id"] for r in records}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descends_from_us(pid: int) -> bool:
    """Whether ``pid`` is a descendant of this test process (its Ray cluster's workers are).

    Another user's Ray on the same machine runs ``ray::run_candidate`` workers
    too; a test must only ever kill processes it started.
    """
    me, seen = os.getpid(), 0
    parent = _parent(pid)
    while parent and seen < 64:
        if parent == me:
            return True
        parent, seen = _parent(parent), seen + 1
    return False


def running_candidate_workers() -> list[int]:
    """Pids of this test session's Ray workers executing a candidate now (Ray sets their title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if cmdline.startswith("ray::run_candidate") and descends_from_us(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_a_worker_killed_mid_task_is_retried(tmp_path: Path, ray_local: None):
    prepared = prepare_sweep(config_from_dict(config(epochs=25, windows=3)))
    killed: list[int] = []
    results: dict = {}

    def sweep() -> None:
        with Store.open(tmp_path / "home") as store:
            results["summary"] = run_sweep(prepared, store)
            results["records"] = store.list_candidates(prepared.sweep_id)

    thread = threading.Thread(target=sweep)
    thread.start()
    deadline = time.monotonic() + 120
    while not killed and thread.is_alive() and time.monotonic() < deadline:
        workers = running_candidate_workers()
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed, "no worker was seen running a candidate"
    summary, records = results["summary"], results["records"]
    assert summary.ok == 6 and summary.failed == 0  # the killed task was retried, not lost
    assert len(records) == 6
    assert killed[0] not in {r.lineage["worker"]["pid"] for r in records}
