"""``shadow feedback`` and ``shadow leaderboard --live``: an edge runtime's log, labels, the board."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection import Store, promote
from selection.home import Home
from selection.live import live_log_path
from selection.runtime import ChannelRuntime, load_model_bytes
from selection.signature import ModelSignature
from selection.testing import FEATURES, add_tiny_candidates
from shadow.cli.main import main


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)
    with Store.open(Home.resolve(tmp_path / "home")) as opened:
        yield opened


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _edge_log(store: Store, path: Path, n: int = 40) -> list[dict]:
    """An edge app: champion c-a, shadow c-b in-process, its own log file."""
    add_tiny_candidates(store, ["c-a", "c-b"])
    promote(store, "c-a")
    cand = store.get_candidate("c-b")
    shadow = load_model_bytes(store.artifacts.read_verified(cand.onnx_sha256 or ""),
                              candidate_id="c-b",
                              signature=ModelSignature.from_lineage(cand.lineage))
    answers = []
    with ChannelRuntime(store.home.channels_dir, reload=False, log=path,
                        shadows=[shadow]) as runtime:
        for i in range(n):
            row = [((i * 7 + j) % 11 - 5) / 2 for j in range(len(FEATURES))]
            answers.append(runtime.predict({"rows": [row]}))
    return answers


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_device_log_merge_labels_and_live_board(store: Store, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    device_log = tmp_path / "device.db"
    answers = _edge_log(store, device_log)
    home = str(store.home.root)
    code, out, err = run_cli(capsys, "feedback", str(device_log), "--home", home,
                             "--format", "json")
    assert code == 0, err
    assert json.loads(out)["requests_added"] == 40 and json.loads(out)["predictions_added"] == 80
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(
        f"{a['request_id']},{'rain' if i % 3 else 'dry'}\n" for i, a in enumerate(answers)))
    code, out, err = run_cli(capsys, "feedback", str(labels), "--home", home, "--format", "json")
    assert code == 0 and json.loads(out)["added"] == 40, err
    code, out, err = run_cli(capsys, "feedback", str(labels), "--home", home, "--format", "json")
    assert code == 0 and json.loads(out)["unchanged"] == 40  # idempotent

    code, out, err = run_cli(capsys, "leaderboard", "--live", "--home", home, "--format", "json")
    assert code == 0, err
    board = {r["role"]: r for r in json.loads(out)}
    truth = ["rain" if i % 3 else "dry" for i in range(40)]
    champion_acc = sum(a["predictions"][0] == t for a, t in zip(answers, truth, strict=True)) / 40
    assert board["champion"]["candidate_id"] == "c-a" and board["champion"]["n"] == 40
    assert board["champion"]["accuracy"] == pytest.approx(champion_acc)
    assert board["champion"]["ci_low"] <= champion_acc <= board["champion"]["ci_high"]
    assert board["shadow"]["candidate_id"] == "c-b" and board["shadow"]["n"] == 40
    assert board["shadow"]["champion_accuracy"] == pytest.approx(champion_acc)
    code, out, _ = run_cli(capsys, "leaderboard", "--live", "--home", home)
    assert code == 0 and "c-b" in out and "shadow" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("request_id,label\nnot-logged,rain\n", "does not hold"),
        ("id,label\nx,rain\n", "header naming request_id and label"),
        ("request_id,label\nFIRST,snow\n", "one of the model's classes"),
        ('{"request_id": "FIRST", "label": 2.5}\n', "label must be a class label"),
        ('{"request_id": "FIRST", "label": "rain"}\n{oops\n', "line 2 must be one JSON object"),
        ("request_id,label\nFIRST,dry\nFIRST,rain\n", "keeps its first label"),
    ],
)
def test_bad_label_files_exit_2_and_store_nothing(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
    message: str,
) -> None:
    log = live_log_path(store.home.root, "production")
    answers = _edge_log(store, log, n=3)
    bad = tmp_path / ("bad.jsonl" if content.startswith("{") else "bad.csv")
    bad.write_text(content.replace("FIRST", answers[0]["request_id"]))
    code, out, err = run_cli(capsys, "feedback", str(bad), "--home", str(store.home.root))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert _count(log, "SELECT COUNT(*) FROM labels") == 0


def test_live_board_without_a_log_and_other_channel(store: Store, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "leaderboard", "--live", "--home", str(tmp_path))
    assert code == 2 and "has no prediction log yet" in err
    device_log = tmp_path / "device.db"
    _edge_log(store, device_log, n=2)
    shutil.copy(device_log, tmp_path / "copy.db")
    code, _, err = run_cli(capsys, "feedback", str(tmp_path / "copy.db"), "--channel", "canary",
                           "--home", str(store.home.root))
    assert code == 2 and "is the log of channel 'production'" in err


def test_a_damaged_live_log_is_one_line_and_exit_2(store: Store, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    log = live_log_path(store.home.root, "production")
    _edge_log(store, log, n=2)
    for suffix in ("-wal", "-shm"):
        log.with_name(log.name + suffix).unlink(missing_ok=True)
    log.write_bytes(b"this is no database, just bytes " * 200)
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\nr1,rain\n")
    home = str(store.home.root)
    for argv in (("feedback", str(labels), "--home", home),
                 ("leaderboard", "--live", "--home", home),
                 ("serve", "--home", home, "--port", "0", "--no-reload")):
        code, out, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "is not a prediction log" in lines[0], (argv, err)
        assert "move it aside" in lines[0] and "Traceback" not in err


def test_a_refused_feedback_changes_nothing_in_the_home(store: Store, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tests.bad_inputs.contract import assert_user_error, snapshot
    from tests.bad_inputs.contract import run_cli as run_contract

    home = store.home.root
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\nr1,rain\n")
    not_a_log = tmp_path / "other.db"  # an SQLite file, but not a prediction log
    conn = sqlite3.connect(not_a_log)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    conn.close()
    before = snapshot(home)
    for source, message in ((labels, "has no prediction log yet"),
                            (not_a_log, "has no labels, models, predictions, requests table")):
        outcome = run_contract(capsys, "feedback", str(source), "--home", str(home))
        assert_user_error(outcome, message)
        assert outcome.stdout == ""
    assert snapshot(home) == before and not (home / "live").exists()
