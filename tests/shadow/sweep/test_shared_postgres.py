"""Two sweeps and a promoter on one PostgreSQL store at once, each a real process: nothing lost,
nothing duplicated.

A team shares one database (``--store postgresql://...``) and one home (artifacts, channel files).
Here two real ``shadow sweep run`` drivers write their candidates to it at the same time, while a
third process keeps promoting the newest candidates it sees (the gate evaluated, then forced:
what matters is its write transactions racing the drivers'). Afterwards every planned candidate
of each sweep is stored exactly once with one metrics row per device, every promotion the
promoter saw succeed is in the history exactly once, in order, and the channel points at the last
one.

Each driver starts a private local Ray (its own ``RAY_TMPDIR``, found and checked for leftovers by
pid afterwards). Both joining the test session's cluster would not do: Ray workers belong to one
job, so the second driver's tasks queued behind the first's and its writes came after them. The
drivers' start-up alone varies by up to 10 s on a loaded machine, so the first driver to store a
candidate is paused (SIGSTOP: a stalled writer, which the others must not wait for) until the
other has stored one too; from then on both write at once, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection.store import Store
from shadow.sweep.cluster import private_ray_env
from tests.bad_inputs.contract import REPO
from tests.postgres import private_schema_url
from tests.shadow.sweep.own_ray import cluster_pids, stop_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The PostgreSQL server the tests use (ENVIRONMENT.md); `.ci/run` starts it if down.

SWEEP = """\
[sweep]
name = "{name}"
dataset = "noaa-weather"
seed = {seed}

[holdout]
rows = 365

[[slices]]
strategy = "recent"
rows = 730

[[slices]]
strategy = "recent"
rows = 1095

[[slices]]
strategy = "recent"
rows = 1460

[[slices]]
strategy = "recent"
rows = 1825

[model]
family = "mlp"

[model.params]
width = [4, 8]
epochs = 2
"""

#: Promotes the newest ok candidate it has not promoted yet, until told to stop (stdin closes).
#: One JSON line per promotion it saw committed: what the store's history must hold.
PROMOTER = """\
import json, sys, threading, time
from selection.channels.promotion import promote
from selection.gate.decision import evaluate_gate, force_decision
from selection.store import Store

home, url = sys.argv[1], sys.argv[2]
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
store = Store.open(home, url=url)
promoted, errors = set(), 0
while not done.is_set():
    fresh = [c for c in store.list_candidates() if c.status == "ok" and c.candidate_id not in promoted]
    if not fresh:
        time.sleep(0.05)
        continue
    cid = fresh[-1].candidate_id
    decision = evaluate_gate(store, cid)
    record = promote(store, cid, reason="shared-store test",
                     decision=force_decision(decision, "test: racing the sweeps' writes"))
    promoted.add(cid)
    print(json.dumps({"history_id": record.history_id, "candidate_id": cid}), flush=True)
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL naming a private PostgreSQL schema, dropped afterwards."""
    with private_schema_url() as url:
        yield url


def align(drivers: list[subprocess.Popen[str]], home: Path, url: str, timeout_s: float = 180) -> None:
    """Pause the driver that stores a candidate first until the other has stored one too."""
    paused: set[int] = set()
    deadline = time.monotonic() + timeout_s
    with Store.open(home, url=url) as store:
        try:
            while time.monotonic() < deadline:
                counts = {s.name: len(store.candidate_ids(s.sweep_id)) for s in store.list_sweeps()}
                stored = [counts.get(f"team-{k}", 0) > 0 for k in (1, 2)]
                if all(stored):
                    return
                for proc, has in zip(drivers, stored):
                    if has and proc.pid not in paused:
                        os.kill(proc.pid, signal.SIGSTOP)
                        paused.add(proc.pid)
                assert all(p.poll() is None for p in drivers if p.pid not in paused), \
                    "a driver ended before both had stored a candidate"
                time.sleep(0.1)
            raise AssertionError(f"the drivers had not both stored a candidate after {timeout_s:.0f} s")
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def ray_tmps() -> Iterator[list[Path]]:
    """Two short folders (sockets need short paths), one per driver's private Ray."""
    folders = [Path(tempfile.mkdtemp(prefix=f"team{k}-", dir="/tmp")) for k in (1, 2)]
    yield folders
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_two_sweeps_and_a_promoter_share_one_postgres_store(
    tmp_path: Path, pg_url: str, ray_tmps: list[Path],
) -> None:
    home = tmp_path / "home"
    with Store.open(home, url=pg_url):
        pass  # the schema exists before three processes race to create it
    base = {k: v for k, v in os.environ.items() if k not in ("SHADOW_STORE", "SHADOW_HOME")}
    configs = []
    for k in (1, 2):
        path = tmp_path / f"sweep-{k}.toml"
        path.write_text(SWEEP.format(name=f"team-{k}", seed=k))
        configs.append(path)

    promoter = subprocess.Popen(
        [sys.executable, "-c", PROMOTER, str(home), pg_url], cwd=REPO, env=base,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweeps = [subprocess.Popen(
        [sys.executable, "-m", "shadow", "sweep", "run", str(path), "--store", pg_url,
         "--home", str(home), "--format", "json"],
        cwd=REPO, env=private_ray_env(ray_tmp, base), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
        for path, ray_tmp in zip(configs, ray_tmps)]
    try:
        align(sweeps, home, pg_url)
        outputs = [proc.communicate(timeout=300) for proc in sweeps]
    finally:
        for proc in sweeps:
            if proc.poll() is None:
                proc.kill()
        out, err = promoter.communicate(input="", timeout=120)  # stdin closed: it stops
        # A driver shuts its own Ray down: give it a moment, note what is left, then stop that.
        deadline = time.monotonic() + 10
        while any(cluster_pids(t) for t in ray_tmps) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = [pid for t in ray_tmps for pid in cluster_pids(t)]
        for ray_tmp in ray_tmps:
            stop_cluster(ray_tmp, grace_s=5)
    assert leftover == [], f"processes of a driver's private Ray outlived it: {leftover}"
    for proc, (_, stderr) in zip(sweeps, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    assert promoter.returncode == 0, err[-3000:]
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    seen = [json.loads(line) for line in out.splitlines()]

    with Store.open(home, url=pg_url, create=False) as store:
        stored = {s.sweep_id: s for s in store.list_sweeps()}
        assert sorted(s.name for s in stored.values()) == ["team-1", "team-2"]
        windows = []
        for summary in summaries:
            sweep = stored[summary["sweep_id"]]
            records = store.list_candidates(sweep.sweep_id)
            ids = [r.candidate_id for r in records]
            # Every planned candidate once, each with its one host-cpu result.
            assert len(ids) == len(set(ids)) == sweep.n_planned == summary["ok"] == 8
            assert all(r.status == "ok" and [d.device for d in r.devices] == ["host-cpu"]
                       for r in records)
            windows.append((min(r.created_at for r in records), max(r.created_at for r in records)))
        with store.snapshot() as conn:
            rows = conn.exec_driver_sql(
                "SELECT COUNT(*), COUNT(DISTINCT candidate_id) FROM device_metrics").one()
        assert tuple(rows) == (16, 16)
        from selection.channels.promotion import current, history

        rows_of_history = list(reversed(history(store)))  # oldest first
        last = current(store)
    # The two drivers' writes interleaved (otherwise this tested nothing shared).
    (a_start, a_end), (b_start, b_end) = windows
    assert a_start <= b_end and b_start <= a_end, windows
    assert len(seen) >= 2, err[-3000:]
    # Each promotion the promoter saw committed is in the history once, in order, nothing else.
    assert [(r.history_id, r.candidate_id) for r in rows_of_history] == \
        [(p["history_id"], p["candidate_id"]) for p in seen]
    assert last is not None and last.history_id == seen[-1]["history_id"]
