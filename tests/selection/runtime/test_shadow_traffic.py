"""Shadow traffic through the real HTTP server: request ids, the log, shadows, feedback, metrics."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection import Store, promote
from selection.live import PredictionLog, live_log_path
from selection.live.shadow_writer import ShadowLogProcess
from selection.runtime import ChannelRuntime, ShadowScorer, load_model_bytes
from selection.runtime.server import ModelServer, make_server
from selection.signature import ModelSignature
from selection.testing import FEATURES, add_tiny_candidates

REPO = Path(__file__).resolve().parents[3]
ROW = [0.5] * len(FEATURES)


def _shadow(store: Store, cid: str) -> object:
    candidate = store.get_candidate(cid)
    sha = candidate.onnx_sha256 or ""
    return load_model_bytes(store.artifacts.read_verified(sha), candidate_id=cid, sha256=sha,
                            signature=ModelSignature.from_lineage(candidate.lineage))


@pytest.fixture(params=["log-process", "in-process"])
def served(store: Store, request: pytest.FixtureRequest
           ) -> Iterator[tuple[ModelServer, PredictionLog]]:
    """A server with 2 shadows; their rows written by their own process (as `shadow serve`
    does) or by the server's (as an app embedding ChannelRuntime does)."""
    add_tiny_candidates(store, ["c-a", "c-b", "c-c"])
    promote(store, "c-a")
    log = PredictionLog(live_log_path(store.home.root, "production"), channel="production",
                        flush_interval_s=0.01)
    sink = (ShadowLogProcess(log.path, channel="production", flush_interval_s=0.01)
            if request.param == "log-process" else None)
    scorer = ShadowScorer([_shadow(store, "c-b"), _shadow(store, "c-c")], log,  # type: ignore[list-item]
                          sink=sink)
    runtime = ChannelRuntime(store.home.channels_dir, poll_s=0.002, log=log, shadows=scorer)
    runtime.start()
    srv = make_server(runtime, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, log
    srv.shutdown()
    srv.server_close()
    runtime.stop()
    log.close()


def _call(srv: ModelServer, method: str, path: str, body: object = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        text = raw.decode()
        return response.status, (json.loads(raw) if text.startswith("{") else {"text": text}), \
            dict(response.getheaders())
    finally:
        conn.close()


def _rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_request_ids_logged_shadows_and_feedback(served: tuple[ModelServer, PredictionLog],
                                                 store: Store) -> None:
    srv, log = served
    status, answer, headers = _call(srv, "POST", "/predict", {"rows": [ROW]})
    assert status == 200 and len(answer["request_id"]) == 32
    assert headers["X-Request-Id"] == answer["request_id"]
    status, mine, _ = _call(srv, "POST", "/predict", {"rows": [ROW, ROW]},
                            {"X-Request-Id": "client-7"})
    assert status == 200 and mine["request_id"] == "client-7"
    status, bad, _ = _call(srv, "POST", "/predict", {"rows": [ROW]}, {"X-Request-Id": "a b"})
    assert status == 400 and "X-Request-Id must be" in bad["error"]

    deadline = time.monotonic() + 5  # the shadows score in the background
    while srv.runtime.shadows.counts["scored"] < 2:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    label = answer["predictions"][0]
    status, result, _ = _call(srv, "POST", "/feedback",
                              {"request_id": answer["request_id"], "label": label})
    assert (status, result) == (200, {"received": 1, "added": 1, "unchanged": 0})
    # Idempotent: the same pair again changes nothing.
    status, result, _ = _call(srv, "POST", "/feedback",
                              [{"request_id": answer["request_id"], "label": label},
                               {"request_id": "client-7", "row": 1, "label": "rain"}])
    assert (status, result) == (200, {"received": 2, "added": 1, "unchanged": 1})
    log.flush()
    path = log.path
    deadline = time.monotonic() + 10  # the shadows' rows may come from their own process
    while (by_role := dict(_rows(path, "SELECT role, COUNT(*) FROM predictions GROUP BY role"))
           ) != {0: 3, 1: 6}:  # 3 rows x (champion + 2 shadows); 0 = champion
        assert time.monotonic() < deadline, by_role
        time.sleep(0.01)
    shas = {s for (s,) in _rows(path, "SELECT DISTINCT m.sha256 FROM predictions p JOIN models "
                                      "m ON m.model_key = p.model")}
    assert shas == {store.get_candidate(c).onnx_sha256 for c in ("c-a", "c-b", "c-c")}
    assert _rows(path, "SELECT COUNT(*) FROM labels") == [(2,)]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{nope", 400, "the body must be JSON"),
        ({"request_id": "missing-id", "label": "rain"}, 404, "does not hold"),
        ({"request_id": "x y", "label": "rain"}, 400, "needs a request_id"),
        ({"request_id": "REQ", "label": 1.5}, 400, "label must be a class label"),
        ({"request_id": "REQ", "label": None}, 400, "label must be a class label"),
        ({"request_id": "REQ", "label": "snow"}, 422, "one of the model's classes"),
        ({"request_id": "REQ", "label": "LABEL", "extra": 1}, 400, "unknown keys"),
        ({"request_id": "REQ", "label": "OTHER"}, 409, "keeps its first label"),
        ({"request_id": "REQ", "row": 3, "label": "LABEL"}, 404, "row 3 (it sent 1)"),
        ([], 400, "non-empty list"),
    ],
)
def test_bad_feedback_is_4xx_json_and_nothing_is_lost(
    served: tuple[ModelServer, PredictionLog], body: object, status: int, message: str,
) -> None:
    srv, log = served
    _, answer, _ = _call(srv, "POST", "/predict", {"rows": [ROW]}, {"X-Request-Id": "REQ"})
    label = answer["predictions"][0]
    other = "dry" if label == "rain" else "rain"
    assert _call(srv, "POST", "/feedback", {"request_id": "REQ", "label": label})[0] == 200
    if isinstance(body, (dict, list)):
        body = json.loads(json.dumps(body).replace("LABEL", label).replace("OTHER", other))
    got, error, _ = _call(srv, "POST", "/feedback", body)
    assert (got, error["status"]) == (status, status) and message in error["error"], error
    assert _call(srv, "GET", "/healthz")[0] == 200
    log.flush()
    assert _rows(log.path, "SELECT label FROM labels") == [(label,)]
    assert _rows(log.path, "SELECT COUNT(*) FROM requests") == [(1,)]


def test_metrics_in_prometheus_text(served: tuple[ModelServer, PredictionLog]) -> None:
    srv, _ = served
    for _ in range(3):
        _call(srv, "POST", "/predict", {"rows": [ROW]})
    _call(srv, "POST", "/predict", b"{bad")
    status, body, headers = _call(srv, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    # A request is counted once its answer is written (its latency ends there), so the client
    # can read its answer, and ask for /metrics, a moment before the handler counts it.
    counted = ('shadow_serve_requests_total{code="200",endpoint="/predict"} 3.0',
               'shadow_serve_errors_total{endpoint="/predict",kind="client"} 1.0',
               "shadow_serve_predict_latency_seconds_count 3.0")
    text = body["text"]
    deadline = time.monotonic() + 10
    while not all(line in text for line in counted):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
        text = _call(srv, "GET", "/metrics")[1]["text"]
    assert 'shadow_serve_model_info{candidate_id="c-a"' in text
    assert "shadow_serve_shadow_models 2.0" in text and "shadow_serve_swaps_total 0.0" in text
    assert "shadow_serve_shadow_skipped_total" in text
    for key in ("retries", "mismatched", "orphaned", "errors"):
        assert f"shadow_serve_log_{key}_total 0.0" in text
    # The champion's 3 rows and both shadows' 6, whichever process committed them.
    log = srv.runtime.log
    assert log is not None and log.flush()
    deadline = time.monotonic() + 10
    while "shadow_serve_log_records_total 9.0" not in text:
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
        text = _call(srv, "GET", "/metrics")[1]["text"]


def test_swap_the_old_champion_becomes_a_shadow(served: tuple[ModelServer, PredictionLog],
                                                store: Store) -> None:
    srv, _ = served
    promote(store, "c-b")
    deadline = time.monotonic() + 5
    while _call(srv, "POST", "/predict", {"rows": [ROW]})[1]["candidate_id"] != "c-b":
        assert time.monotonic() < deadline
    shadows = {m.candidate_id for m in srv.runtime.shadows.models}  # type: ignore[union-attr]
    assert shadows == {"c-a", "c-c"}


def test_the_log_survives_a_restart(store: Store) -> None:
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    path = live_log_path(store.home.root, "production")
    ids = []
    for _ in range(2):  # two "server lifetimes" on one file
        with ChannelRuntime(store.home.channels_dir, log=path, reload=False) as runtime:
            ids += [runtime.predict({"rows": [ROW]})["request_id"] for _ in range(5)]
    got = {r for (r,) in _rows(path, "SELECT request_id FROM requests")}
    assert got == set(ids) and len(ids) == 10


def _start_cli(home: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", "0", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SHADOW_STORE": ""})
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert " on http://127.0.0.1:" in line, line
    return proc, line.rsplit(" on http://", 1)[1].split(";")[0].strip()


@pytest.mark.slow
def test_cli_shadows_and_sigterm_loses_nothing(store: Store) -> None:
    add_tiny_candidates(store, ["c-a", "c-b", "c-c"])
    promote(store, "c-a")
    proc, address = _start_cli(store.home.root, "--shadow", "c-b", "--shadow", "c-c",
                               "--log-flush-ms", "5000")  # nothing commits before the stop
    host, port = address.rsplit(":", 1)
    ids = []
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(50):
            conn.request("POST", "/predict", body=json.dumps({"rows": [ROW]}))
            ids.append(json.loads(conn.getresponse().read())["request_id"])
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    path = live_log_path(store.home.root, "production")
    logged = {r for (r,) in _rows(path, "SELECT request_id FROM requests")}
    assert logged == set(ids)
    assert _rows(path, "SELECT COUNT(*) FROM predictions WHERE role = 1") == [(100,)]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b'{"rows": [[1, 2]]}', {}, 400),
        (b'{"rows": [["a", "b", "c", "d", "e", "f", "g", "h"]]}', {}, 400),
        (b"", {"Content-Length": str(16 * 1024 * 1024 + 1)}, 413),
    ],
)
def test_bad_predictions_are_4xx_and_the_log_keeps_the_good_ones(
    served: tuple[ModelServer, PredictionLog], body: bytes, headers: dict[str, str], status: int,
) -> None:
    srv, log = served
    good = [_call(srv, "POST", "/predict", {"rows": [ROW]})[1]["request_id"] for _ in range(3)]
    got, error, _ = _call(srv, "POST", "/predict", body, headers)
    assert got == status and error["status"] == status
    good.append(_call(srv, "POST", "/predict", {"rows": [ROW]})[1]["request_id"])
    log.flush()
    logged = {r for (r,) in _rows(log.path, "SELECT request_id FROM requests")}
    assert logged == set(good)


def test_a_log_locked_past_the_busy_timeout_delays_answers_never_drops_them(
        store: Store) -> None:
    """Another writer (shadow feedback, a merge) holding the lock: retried, and /feedback a 503."""
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    path = live_log_path(store.home.root, "production")
    log = PredictionLog(path, channel="production", flush_interval_s=0.01, busy_timeout_s=0.2)
    runtime = ChannelRuntime(store.home.channels_dir, reload=False, log=log)
    runtime.start()
    srv = make_server(runtime, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        status, first, _ = _call(srv, "POST", "/predict", {"rows": [ROW]})
        assert status == 200 and log.flush()
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # held well past the log's 0.2 s busy timeout
        holder.execute("INSERT INTO meta VALUES ('held', 'by a test')")
        ids = []
        for _ in range(100):
            status, answer, _ = _call(srv, "POST", "/predict", {"rows": [ROW]})
            assert status == 200
            ids.append(answer["request_id"])
        status, busy, headers = _call(srv, "POST", "/feedback", {
            "request_id": first["request_id"], "label": first["predictions"][0]})
        assert status == 503 and "busy" in busy["error"] and headers["Retry-After"] == "1"
        time.sleep(0.5)
        assert log.counts["retries"] >= 1 and log.counts["errors"] == 0
        holder.execute("ROLLBACK")
        holder.close()
        assert log.flush(timeout=10)
        stored = {r for (r,) in _rows(path, "SELECT request_id FROM requests")}
        assert set(ids) <= stored and log.counts["dropped"] == 0
        status, _, _ = _call(srv, "POST", "/feedback", {
            "request_id": first["request_id"], "label": first["predictions"][0]})
        assert status == 200
    finally:
        srv.shutdown()
        srv.server_close()
        runtime.stop()
        log.close()


def test_a_reused_request_id_with_other_inputs_logs_nothing_more(
        served: tuple[ModelServer, PredictionLog]) -> None:
    """The log keeps an id's first inputs: a client reusing it for others adds no predictions."""
    srv, log = served
    shadows = srv.runtime.shadows
    assert shadows is not None
    status, first, _ = _call(srv, "POST", "/predict", {"rows": [ROW]}, {"X-Request-Id": "dup"})
    assert status == 200
    other = [-1.5] * len(FEATURES)
    for body in ({"rows": [other, other]}, {"rows": [ROW]}):  # other inputs, then a true retry
        status, again, _ = _call(srv, "POST", "/predict", body, {"X-Request-Id": "dup"})
        assert status == 200 and again["request_id"] == "dup"
    deadline = time.monotonic() + 5
    while shadows.counts["scored"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert log.flush()

    def mismatched() -> int:
        sink = shadows.sink.stats()["mismatched"] if shadows.sink is not None else 0
        return int(log.counts["mismatched"]) + int(sink)

    deadline = time.monotonic() + 10  # the shadows' rows may come from their own process
    while (rows := _rows(log.path, "SELECT row, COUNT(*) FROM predictions WHERE request_id = "
                                   "'dup' GROUP BY row")) != [(0, 3)] or mismatched() < 3:
        assert time.monotonic() < deadline, rows  # 3: the champion and two shadows
        time.sleep(0.01)
    time.sleep(0.2)  # nothing more arrives
    assert mismatched() == 3  # the second request's champion and shadow records
    assert _rows(log.path, "SELECT n_rows FROM requests WHERE request_id = 'dup'") == [(1,)]
