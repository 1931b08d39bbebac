"""The prediction log: batching, durability across a real SIGKILL, labels, the live board."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selection.live import Feedback, ModelRef, PredictionLog, apply_feedback
from selection.live.board import REFERENCE_SQL, live_board, paired_outcomes, wilson
from selection.live.db import connect
from selection.live.feedback import LabelConflictError
from selection.live.ingest import ingest_labels, merge_log

REPO = Path(__file__).resolve().parents[3]
CHAMP = ModelRef("champ", "a" * 64, ("dry", "rain"))
SHADOW = ModelRef("shadow", "b" * 64, ("dry", "rain"))


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_wilson_interval() -> None:
    low, high = wilson(80, 100)
    assert low == pytest.approx(0.7112, abs=1e-4) and high == pytest.approx(0.8667, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] > 0.69


def test_board_matches_the_plain_join_with_late_shadows_and_merged_logs(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with PredictionLog(path, channel="production", flush_interval_s=0.01) as log:
        for i in range(30):
            said = ["rain" if i % 2 else "dry"]
            log.log_champion(f"r{i}", CHAMP, said, "0" * 64)
            if i < 20:
                log.log_shadow(f"r{i}", SHADOW, ["rain" if i % 3 else "dry"], said)
        log.add_feedback([Feedback(f"r{i}", "rain" if i % 4 else "dry") for i in range(25)])
        # A shadow that finishes after its label came back still counts.
        log.log_shadow("r22", SHADOW, ["rain"], ["dry"])
    device = tmp_path / "device.db"
    other = ModelRef("edge-shadow", "c" * 64, ("dry", "rain"))
    with PredictionLog(device, channel="production") as log:
        log.log_champion("d1", CHAMP, ["rain"], "0" * 64)
        log.log_shadow("d1", other, ["dry"], ["rain"])
        log.add_feedback([Feedback("d1", "dry")])
    merge_log(path, device, "production")
    conn = connect(path)
    try:
        fast = [r.as_dict() for r in live_board(conn)]
        reference = [r.as_dict() for r in live_board(conn, sql=REFERENCE_SQL)]
        assert fast == reference
        by_name = {r["candidate_id"]: r for r in fast}
        assert by_name["champ"]["n"] == 26 and by_name["shadow"]["n"] == 21
        assert by_name["edge-shadow"]["n"] == 1 and by_name["edge-shadow"]["agreement"] == 0.0
        mine, theirs = paired_outcomes(conn, SHADOW.sha256, CHAMP.sha256)
        assert len(mine) == 21 and sum(mine) == round(by_name["shadow"]["accuracy"] * 21)
        assert sum(theirs) == round(by_name["shadow"]["champion_accuracy"] * 21)
    finally:
        conn.close()


def test_feedback_is_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with PredictionLog(path) as log:
        log.log_champion("r1", CHAMP, ["rain", "dry"], "0" * 64)
        log.add_feedback([Feedback("r1", "rain")])
        with pytest.raises(LabelConflictError, match="keeps its first label"):
            log.add_feedback([Feedback("r1", "dry", row=1), Feedback("r1", "dry")])
        assert log.add_feedback([Feedback("r1", "dry", row=1)]).added == 1
    conn = connect(path)
    try:
        with pytest.raises(LabelConflictError):
            apply_feedback(conn, [Feedback("r1", "dry", 1), Feedback("r1", "rain", 1)])
    finally:
        conn.close()
    assert _count(path, "SELECT COUNT(*) FROM labels") == 2


def test_sigkill_loses_only_the_uncommitted_batch(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from selection.live import ModelRef, PredictionLog
        ref = ModelRef("champ", "a" * 64, ("dry", "rain"))
        log = PredictionLog({str(path)!r}, flush_interval_s=30.0, batch_size=10**6)
        for i in range(1000):
            log.log_champion(f"c{{i}}", ref, ["rain"], "0" * 64)
        log.flush()                      # committed: must survive
        for i in range(37):
            log.log_champion(f"u{{i}}", ref, ["rain"], "0" * 64)
        print(log.pending, flush=True)   # accepted, not committed
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pending = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert pending == 37
    assert _count(path, "SELECT COUNT(*) FROM requests") == 1000  # lost: exactly the 37 pending
    assert _count(path, "SELECT COUNT(*) FROM requests WHERE request_id LIKE 'c%'") == 1000


def test_a_full_log_drops_and_counts(tmp_path: Path) -> None:
    with PredictionLog(tmp_path / "p.db", max_pending=5, flush_interval_s=30.0,
                       batch_size=10**6) as log:
        accepted = [log.log_champion(f"r{i}", CHAMP, ["rain"], "0" * 64) for i in range(8)]
        assert accepted == [True] * 5 + [False] * 3 and log.counts["dropped"] == 3
    assert _count(tmp_path / "p.db", "SELECT COUNT(*) FROM requests") == 5


def test_a_rolled_back_commit_never_lends_its_model_key(tmp_path: Path) -> None:
    """A commit that fails after adding a new model must not leave that model's key cached."""
    path = tmp_path / "p.db"
    first = ModelRef("first", "d" * 64, ("dry", "rain"))
    second = ModelRef("second", "e" * 64, ("dry", "rain"))
    with PredictionLog(path, flush_interval_s=30.0, batch_size=10**6) as log:
        # A real failure inside the writer's transaction: a trigger that aborts one request.
        conn = sqlite3.connect(path)
        conn.execute("CREATE TRIGGER fail BEFORE INSERT ON requests WHEN new.request_id = "
                     "'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        conn.commit()
        conn.close()
        log.log_champion("boom", first, ["rain"], "0" * 64)
        assert log.flush() and log.counts["errors"] == 1
        log.log_champion("r1", second, ["dry"], "0" * 64)   # takes the key "first" never kept
        assert log.flush()
        log.log_champion("r2", first, ["rain"], "0" * 64)
        assert log.flush()
    stored = dict(_rows(path, "SELECT p.request_id, m.candidate_id FROM predictions p "
                              "JOIN models m ON m.model_key = p.model"))
    assert stored == {"r1": "second", "r2": "first"}


def _rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_files_are_checked_whole_then_stored_in_bounded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with PredictionLog(path, channel="production") as log:
        for i in range(25):
            log.log_champion(f"r{i:02d}", CHAMP, ["rain"], "0" * 64)
    items = [Feedback(f"r{i:02d}", "rain" if i % 3 else "dry") for i in range(25)]
    with pytest.raises(LabelConflictError):  # the clash is in the last chunk: nothing stored
        ingest_labels(path, [*items, Feedback("r00", "rain")], "production", chunk_rows=4)
    assert _count(path, "SELECT COUNT(*) FROM labels") == 0
    assert ingest_labels(path, items, "production", chunk_rows=4).added == 25
    assert ingest_labels(path, items, "production", chunk_rows=4).unchanged == 25
    device = tmp_path / "device.db"
    with PredictionLog(device, channel="production") as log:
        for i in range(23):
            log.log_champion(f"d{i:02d}", CHAMP, ["dry"], "1" * 64)
            log.log_shadow(f"d{i:02d}", SHADOW, ["rain"], ["dry"])
        log.add_feedback([Feedback(f"d{i:02d}", "rain") for i in range(0, 23, 2)])
    result = merge_log(path, device, "production", chunk_requests=5)  # 5 chunks
    assert result.as_dict() == {"requests_added": 23, "predictions_added": 46, "labels_added": 12}
    assert merge_log(path, device, "production", chunk_requests=5).requests == 0  # idempotent
    conn = connect(path)
    try:
        assert [r.as_dict() for r in live_board(conn)] == \
            [r.as_dict() for r in live_board(conn, sql=REFERENCE_SQL)]
        assert {r.candidate_id: r.n for r in live_board(conn)} == {"champ": 37, "shadow": 12}
    finally:
        conn.close()


def test_a_device_log_reusing_ids_for_other_inputs_is_refused(tmp_path: Path) -> None:
    from selection.live.ingest import RequestIdClashError

    path, device = tmp_path / "p.db", tmp_path / "device.db"
    with PredictionLog(path, channel="production") as log:
        log.log_champion("7", CHAMP, ["rain"], "1" * 64)
    with PredictionLog(device, channel="production") as log:  # a device counting from 1 too
        for i in range(1, 10):
            log.log_champion(str(i), CHAMP, ["dry"], "2" * 64)
    with pytest.raises(RequestIdClashError, match="holds 1 request id.*'7'.*nothing was merged"):
        merge_log(path, device, "production")
    assert _count(path, "SELECT COUNT(*) FROM requests") == 1
    assert _count(path, "SELECT COUNT(*) FROM predictions") == 1


def test_an_older_log_is_upgraded_and_a_newer_or_first_layout_refused(tmp_path: Path) -> None:
    from selection.live.db import SCHEMA_VERSION, LiveLogError

    path = tmp_path / "p.db"
    with PredictionLog(path, channel="production") as log:
        for i in range(12):
            log.log_champion(f"r{i}", CHAMP, ["rain"], "0" * 64)
            log.log_shadow(f"r{i}", SHADOW, ["dry" if i % 3 else "rain"], ["rain"])
        log.add_feedback([Feedback(f"r{i}", "rain") for i in range(9)])
    raw = sqlite3.connect(path, isolation_level=None)  # as schema 1 wrote it: no board
    raw.executescript("DROP TRIGGER board_on_label; DROP TRIGGER board_on_insert; DROP TABLE "
                      "board; UPDATE predictions SET label = NULL; UPDATE meta SET value = '1' "
                      "WHERE key = 'schema_version'")
    raw.close()
    conn = connect(path, create=False)  # a reader (leaderboard --live) upgrades it
    try:
        board = {r.candidate_id: (r.n, r.accuracy) for r in live_board(conn)}
        assert board == {"champ": (9, 1.0), "shadow": (9, 3 / 9)}
        assert [r.as_dict() for r in live_board(conn)] == \
            [r.as_dict() for r in live_board(conn, sql=REFERENCE_SQL)]
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
    finally:
        conn.close()
    with PredictionLog(path) as log:  # the triggers are back: a new label is counted
        log.log_champion("r99", CHAMP, ["rain"], "0" * 64)
        log.add_feedback([Feedback("r99", "rain")])
    assert _count(path, "SELECT n FROM board WHERE role = 0") == 10
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(LiveLogError, match="written by a newer shadow-sweep"):
        connect(path)
    first = tmp_path / "first.db"  # the first layout: sha256 per prediction row, no model keys
    raw = sqlite3.connect(first, isolation_level=None)
    raw.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT "
                      "INTO meta VALUES ('schema_version', '1'); CREATE TABLE predictions "
                      "(request_id TEXT, row INTEGER, sha256 TEXT, role TEXT, predicted TEXT)")
    raw.close()
    with pytest.raises(LiveLogError, match="first layout.*move it aside"):
        connect(first, create=False)
