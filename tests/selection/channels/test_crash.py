"""Crash consistency: real ``python -m shadow promote/rollback`` processes killed with SIGKILL.

Nothing in the product knows it is being tested. The driver watches from
outside: ``channels/.production.lock`` holds the pid of the process that owns
the channel's lock, so once it shows the child's pid the child is inside the
critical section (verify, transaction, version build, commit, link swap);
most kills land there after a random delay, the others at a uniformly random
moment of the whole run. After every kill the state must be one of:

- untouched: the history is what it was and the files show its newest row;
- done: one new row, and the files show it;
- lagging: one new row, the files still show the previous (loadable) model,
  and ``doctor.repair`` makes them agree without touching the history.

The model is ~13 MB so copying and hashing it keep the process inside the
critical section long enough for random kills to hit every step.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selection import Store, current, history, promote
from selection.channels.doctor import diagnose, repair
from selection.channels.files import channel_lock, leftovers
from selection.records import PromotionRecord
from selection.runtime import load_version
from selection.testing import add_tiny_candidates

REPO = Path(__file__).resolve().parents[3]
CANDIDATES = ["c-a", "c-b", "c-c"]
HIDDEN = 300_000  # ~13 MB per model
N_KILLS = 12
SEED = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1, 10**6)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


@pytest.fixture
def big(store: Store) -> Store:
    add_tiny_candidates(store, CANDIDATES, hidden=HIDDEN)
    promote(store, "c-a")
    return store


def _spawn(home: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shadow", *argv, "--home", str(home)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SHADOW_STORE": ""},
    )


def _next_op(rows: list[PromotionRecord], rng: random.Random) -> list[str]:
    live = {r.history_id for r in rows if r.action == "promote"} - {
        r.reverts_id for r in rows if r.action == "rollback"}
    newest_live = max(live, default=None)
    can_roll_back = newest_live is not None and any(
        r.history_id == newest_live and r.previous_candidate_id for r in rows)
    if can_roll_back and rng.random() < 0.4:
        return ["rollback", "--reason", "crash test"]
    others = [c for c in CANDIDATES if c != rows[0].candidate_id]
    # --force: these synthetic candidates have no holdout for the gate to compare on.
    return ["promote", rng.choice(others), "--force", "--reason", "crash test"]


def _lock_owner(home: Path) -> str:
    try:
        return (home / "channels" / ".production.lock").read_text().strip()
    except OSError:
        return ""


def _run_and_kill(home: Path, argv: list[str], delay: float, targeted: bool) -> tuple[int, bool]:
    """Start one command, SIGKILL it ``delay`` s after it takes the lock (or after start)."""
    proc = _spawn(home, argv)
    if targeted:
        while proc.poll() is None and _lock_owner(home) != f"pid {proc.pid}":
            time.sleep(0.0005)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if not killed:
        assert proc.returncode == 0, err
    return proc.returncode, killed


def _check(store: Store, before: list[PromotionRecord]) -> str:
    """Assert the invariants; returns which of untouched/done/lagging the kill left."""
    rows = history(store, channel="production")
    assert rows[len(rows) - len(before):] == before, "history lost or rewrote a row"
    assert len(rows) - len(before) in (0, 1)
    now = current(store, "production")
    assert now == rows[0]
    model = load_version(store.home.channel_dir("production").resolve(), channel="production")
    if model.manifest["history_id"] == now.history_id:
        assert model.sha256 == now.sha256
        return "untouched" if len(rows) == len(before) else "done"
    # Killed between the commit and the swap: the old model serves, doctor repairs.
    assert (model.manifest["history_id"], model.sha256) == (before[0].history_id, before[0].sha256)
    failing = [f.check for f in diagnose(store) if f.status == "fail"]
    assert failing == ["channel production files"]
    repair(store)
    assert history(store, channel="production") == rows
    fixed = load_version(store.home.channel_dir("production").resolve(), channel="production")
    assert (fixed.manifest["history_id"], fixed.sha256) == (now.history_id, now.sha256)
    return "lagging"


def test_sigkill_at_random_points_leaves_a_loadable_model_and_agreeing_history(big: Store) -> None:
    rng = random.Random(SEED)
    home = big.home.root
    # Calibrate: how long a command holds the lock on this machine, right now.
    start = time.monotonic()
    proc = _spawn(home, ["promote", "c-b", "--force", "--reason", "calibrate"])
    while proc.poll() is None and _lock_owner(home) != f"pid {proc.pid}":
        time.sleep(0.0005)
    locked = time.monotonic()
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    hold, whole = time.monotonic() - locked, time.monotonic() - start
    outcomes: dict[str, int] = {}
    for i in range(N_KILLS):
        before = history(big, channel="production")
        argv = _next_op(before, rng)
        targeted = i % 4 != 3
        delay = rng.uniform(0, hold * 1.1) if targeted else rng.uniform(0, whole)
        rc, killed = _run_and_kill(home, argv, delay, targeted)
        state = _check(big, before) if killed else "completed"
        outcomes[state] = outcomes.get(state, 0) + 1
    print(f"seed={SEED} hold={hold * 1000:.0f}ms whole={whole:.2f}s outcomes={outcomes}")
    # At least some kills must have landed inside the critical section.
    assert outcomes.get("untouched", 0) + outcomes.get("done", 0) + outcomes.get("lagging", 0) > 0
    final = repair(big)
    assert not [f for f in final if f.status == "fail"], final
    assert leftovers(big.home) == []


def test_a_change_while_another_holds_the_channel_is_refused_in_one_line(big: Store) -> None:
    before = history(big)
    link = os.readlink(big.home.channel_dir("production"))
    with channel_lock(big.home, "production"):  # this test process is "the other promote"
        procs = [_spawn(big.home.root, ["promote", "c-b", "--force", "--reason", "x"]),
                 _spawn(big.home.root, ["rollback"])]
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    for (rc, err), verb in zip(results, ["promote", "rollback"]):
        assert rc == 2
        assert err.count("\n") == 1 and err.startswith(f"shadow {verb}: error: one change at "
                                                       "a time per channel")
        assert f"(pid {os.getpid()})" in err and "nothing was changed" in err
    assert history(big) == before
    assert os.readlink(big.home.channel_dir("production")) == link


def test_two_promotes_at_once_are_serialized(big: Store) -> None:
    for _ in range(2):
        # Race two candidates that are both not in production, so that each one's only
        # reason to lose is the other holding the channel (not "already in production").
        serving = current(big, "production")
        rivals = [c for c in CANDIDATES if serving is None or c != serving.candidate_id][:2]
        procs = [_spawn(big.home.root, ["promote", c, "--force", "--reason", "race"])
                 for c in rivals]
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
        assert any(rc == 0 for rc, _ in results), results
        for rc, err in results:
            if rc != 0:
                assert rc == 2 and err.count("\n") == 1, err
                # Three honest ways to lose the race: the other promote holds the channel lock,
                # it already put this candidate in, or it moved the channel after this one's gate
                # judged against the old champion (promote re-checks that inside its transaction).
                assert ("one change at a time per channel" in err or "already in" in err
                        or "changed since the gate judged" in err), err
        assert not [f for f in diagnose(big) if f.status == "fail"]
