"""The shadows' log process: rows wait for their request, orphans are dropped, a crash keeps rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from array import array
from pathlib import Path

from selection.live import ModelRef, PredictionLog
from selection.live.shadow_writer import ShadowLogProcess

REPO = Path(__file__).resolve().parents[3]
CHAMP = ModelRef("champ", "a" * 64, ("dry", "rain"))
SHADOW = ModelRef("shadow", "b" * 64, ("dry", "rain"))


def _ints(*values: int) -> bytes:
    return array("i", values).tobytes()


def _rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _shadow_rows(path: Path) -> list[tuple]:
    return _rows(path, "SELECT request_id, row, predicted, champion FROM predictions "
                       "WHERE role = 1 ORDER BY request_id, row")


def test_shadow_rows_wait_for_their_request_and_orphans_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    champion_log = PredictionLog(path, channel="production", flush_interval_s=60)
    sink = ShadowLogProcess(path, channel="production", flush_interval_s=0.01,
                            wait_for_request_s=1.0)
    try:
        # The shadow's rows reach the child first: the champion's rows are still pending here.
        champion_log.log_champion("r1", CHAMP, ["dry", "rain"], "1" * 64)
        assert sink.log_batch([SHADOW], [("r1", 2, CHAMP.sha256, ["dry", "rain"], "1" * 64),
                                         ("ghost", 1, CHAMP.sha256, ["dry"], "2" * 64)],
                              [_ints(1, 1, 0)])
        deadline = time.monotonic() + 10
        while sink.stats()["received"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)  # several of the child's commits: r1 is held, not written, not dropped
        assert _shadow_rows(path) == []
        assert champion_log.flush()
        deadline = time.monotonic() + 10
        while not _shadow_rows(path):  # the next commit finds r1's request row
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _shadow_rows(path) == [("r1", 0, "rain", "dry"), ("r1", 1, "rain", "rain")]
        time.sleep(1.2)  # past wait_for_request_s: "ghost" was never answered by the champion
    finally:
        sink.close()
        champion_log.close()
    stats = sink.stats()
    assert stats["alive"] is False
    assert (stats["logged"], stats["orphaned"], stats["received"]) == (1, 1, 2)


def test_rows_under_a_reused_id_for_other_inputs_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    with PredictionLog(path, channel="production") as champion_log:
        champion_log.log_champion("r1", CHAMP, ["dry"], "1" * 64)
    sink = ShadowLogProcess(path, channel="production", flush_interval_s=0.01)
    assert sink.log_batch([SHADOW], [("r1", 1, CHAMP.sha256, ["dry"], "9" * 64)], [_ints(1)])
    sink.close()
    assert sink.stats()["mismatched"] == 1 and _shadow_rows(path) == []


def test_a_dead_child_is_seen_and_refuses_batches(tmp_path: Path) -> None:
    sink = ShadowLogProcess(tmp_path / "live.db", channel="production")
    pid = sink.stats()["process"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sink.alive:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not sink.log_batch([SHADOW], [("r1", 1, CHAMP.sha256, ["dry"], "1" * 64)],
                              [_ints(1)])  # the caller then logs the rows in its own process
    sink.close()


def test_a_killed_server_leaves_the_child_to_write_what_it_received(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    script = textwrap.dedent(f"""
        import os, signal, time
        from array import array
        from selection.live import ModelRef, PredictionLog
        from selection.live.shadow_writer import ShadowLogProcess
        champ = ModelRef("champ", "a" * 64, ("dry", "rain"))
        shadow = ModelRef("shadow", "b" * 64, ("dry", "rain"))
        if __name__ == "__main__":
            log = PredictionLog({str(path)!r}, channel="production", flush_interval_s=60)
            ids = [f"r{{i}}" for i in range(50)]
            for rid in ids:
                log.log_champion(rid, champ, ["dry"], "1" * 64)
            log.flush()
            sink = ShadowLogProcess({str(path)!r}, channel="production", flush_interval_s=60)
            sink.log_batch([shadow], [(rid, 1, champ.sha256, ["dry"], "1" * 64) for rid in ids],
                           [array("i", [1] * 50).tobytes()])
            print(sink.stats()["process"], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    server = tmp_path / "server.py"
    server.write_text(script)
    proc = subprocess.run([sys.executable, str(server)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 20
    while _running(child):  # the orphaned child sees end of file, commits and exits
        assert time.monotonic() < deadline, "the shadows' log process outlived its server"
        time.sleep(0.05)
    assert _rows(path, "SELECT COUNT(*) FROM predictions WHERE role = 1") == [(50,)]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap an orphan)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_rows_still_held_at_close_are_counted_never_silently_gone(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    champion_log = PredictionLog(path, channel="production", flush_interval_s=60)
    champion_log.log_champion("r1", CHAMP, ["dry"], "1" * 64)  # pending: not in the file yet
    sink = ShadowLogProcess(path, channel="production", flush_interval_s=60)
    assert sink.log_batch([SHADOW], [("r1", 1, CHAMP.sha256, ["dry"], "1" * 64)], [_ints(1)])
    sink.close()  # before the champion's row: its one row can only be orphaned, and counted
    champion_log.close()
    stats = sink.stats()
    assert (stats["received"], stats["logged"], stats["orphaned"]) == (1, 0, 1)


def test_held_rows_are_bounded_like_the_pending_queue(tmp_path: Path) -> None:
    with PredictionLog(tmp_path / "live.db", max_pending=10, wait_for_request_s=60) as log:
        for i in range(25):  # in batches within the pending bound; each commit holds them
            assert log.log_shadow(f"r{i}", SHADOW, ["rain"], ["dry"], "1" * 64)
            if i % 5 == 4:
                assert log.flush()
        assert log.counts["orphaned"] == 15  # the oldest; 10 are still waiting for requests
    assert log.counts["orphaned"] == 25 and log.counts["logged"] == 0


def test_a_stop_signal_to_the_whole_group_loses_no_shadow_row(tmp_path: Path) -> None:
    """Ctrl-C and systemd signal every process of the server's group, the child included."""
    path = tmp_path / "live.db"
    script = textwrap.dedent(f"""
        import os, signal, sqlite3, time
        from array import array
        from selection.live import ModelRef, PredictionLog
        from selection.live.shadow_writer import ShadowLogProcess
        champ = ModelRef("champ", "a" * 64, ("dry", "rain"))
        shadow = ModelRef("shadow", "b" * 64, ("dry", "rain"))
        if __name__ == "__main__":
            os.setpgrp()
            log = PredictionLog({str(path)!r}, channel="production", flush_interval_s=0.05)
            sink = ShadowLogProcess({str(path)!r}, channel="production", flush_interval_s=0.05)
            ids = [f"r{{i}}" for i in range(50)]
            for rid in ids:
                log.log_champion(rid, champ, ["dry"], "1" * 64)
            sink.log_batch([shadow], [(rid, 1, champ.sha256, ["dry"], "1" * 64) for rid in ids],
                           [array("i", [1] * 50).tobytes()])
            stops = []
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stops.append(1))
            os.killpg(0, signal.SIGTERM)
            os.killpg(0, signal.SIGINT)
            time.sleep(0.3)
            log.flush(); sink.close(); log.close()  # shadow serve's clean stop, in its order
            print(len(stops), sink.stats()["logged"])
    """)
    server = tmp_path / "server.py"
    server.write_text(script)
    proc = subprocess.run([sys.executable, str(server)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.split() == ["2", "50"]
    assert _rows(path, "SELECT COUNT(*) FROM predictions WHERE role = 1") == [(50,)]


def test_a_server_that_exits_without_closing_does_not_hang_on_its_child(tmp_path: Path) -> None:
    """multiprocessing's exit hook SIGTERMs daemon children (this one ignores it) and waits."""
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(f"""
        from selection.live.shadow_writer import ShadowLogProcess
        if __name__ == "__main__":
            sink = ShadowLogProcess({str(tmp_path / "live.db")!r}, channel="production")
            raise SystemExit(3)  # an error on the way up: close() is never called
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
