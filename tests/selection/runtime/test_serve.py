"""``shadow serve``: the HTTP server over the runtime (in-process), and the real CLI."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection import Store, promote
from selection.runtime import ChannelRuntime
from selection.runtime.server import MAX_BODY_BYTES, ModelServer, make_server
from selection.testing import FEATURES, add_tiny_candidates

REPO = Path(__file__).resolve().parents[3]
ROW = [0.5] * len(FEATURES)


@pytest.fixture
def server(store: Store) -> Iterator[ModelServer]:
    add_tiny_candidates(store, ["c-a", "c-b"])
    promote(store, "c-a")
    runtime = ChannelRuntime(store.home.channels_dir, poll_s=0.002)
    runtime.start()
    srv = make_server(runtime, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    runtime.stop()


def _call(srv: ModelServer, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_predict_model_and_healthz(server: ModelServer, store: Store) -> None:
    status, answer = _call(server, "POST", "/predict", json.dumps({"rows": [ROW, ROW]}).encode())
    assert status == 200
    assert answer["candidate_id"] == "c-a" and len(answer["predictions"]) == 2
    assert answer["sha256"] == store.get_candidate("c-a").onnx_sha256
    status, health = _call(server, "GET", "/healthz")
    assert (status, health["status"], health["candidate_id"]) == (200, "ok", "c-a")
    status, model = _call(server, "GET", "/model")
    assert status == 200 and model["model"]["features"] == list(FEATURES)


def test_keep_alive_connection_sees_the_swap(server: ModelServer, store: Store) -> None:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    body = json.dumps({"rows": [ROW]}).encode()

    def ask() -> str:
        conn.request("POST", "/predict", body=body)
        return json.loads(conn.getresponse().read())["candidate_id"]

    assert ask() == "c-a"
    promote(store, "c-b")
    deadline = time.monotonic() + 5
    while ask() != "c-b":
        assert time.monotonic() < deadline
        time.sleep(0.002)
    conn.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("POST", "/predict", b"{not json", {}, 400, "the body must be JSON"),
        ("POST", "/predict", b'{"rows": [[1, 2]]}', {}, 400, "every row must have 8 values"),
        ("POST", "/predict", b'{"rows": "x"}', {}, 400, '"rows" must be a non-empty list'),
        ("POST", "/predict", b"\xff\xfe", {}, 400, "the body must be JSON"),
        ("GET", "/predict", None, {}, 405, "POST /predict takes a JSON body"),
        ("POST", "/healthz", b"{}", {}, 405, "answers GET only"),
        ("GET", "/nope", None, {}, 404, "no endpoint '/nope'"),
        ("DELETE", "/predict", None, {}, 405, "method 'DELETE' is not supported"),
        ("POST", "/predict", b"", {"Content-Length": str(MAX_BODY_BYTES + 1)}, 413, "at most"),
        ("POST", "/predict", b"", {"Content-Length": "abc"}, 400, "Content-Length must be"),
    ],
)
def test_bad_requests_get_json_4xx_and_the_server_lives_on(
    server: ModelServer, method: str, path: str, body: bytes | None, headers: dict[str, str],
    status: int, message: str,
) -> None:
    got, answer = _call(server, method, path, body, headers)
    assert got == status and answer["status"] == status
    assert message in answer["error"]
    assert _call(server, "GET", "/healthz")[0] == 200


def test_missing_content_length_is_411(server: ModelServer) -> None:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/predict")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    conn.close()


def _start_cli(home: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", "0", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert " on http://127.0.0.1:" in line, line
    return proc, line.rsplit(" on http://", 1)[1].split(";")[0].strip()


def test_cli_serves_hot_swaps_and_stops_on_sigterm(store: Store) -> None:
    add_tiny_candidates(store, ["c-a", "c-b"])
    promote(store, "c-a")
    proc, address = _start_cli(store.home.root)
    host, port = address.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/predict", body=json.dumps({"rows": [ROW]}))
        assert json.loads(conn.getresponse().read())["candidate_id"] == "c-a"
        promote(store, "c-b")
        assert proc.stderr is not None
        assert "swapped to candidate c-b" in proc.stderr.readline()
        conn.request("POST", "/predict", body=json.dumps({"rows": [ROW]}))
        assert json.loads(conn.getresponse().read())["candidate_id"] == "c-b"
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_refuses_a_missing_channel(store: Store) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shadow", "serve", "--home", str(store.home.root)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("shadow serve: error: channel 'production' must exist")


def _device_home(store: Store, root: Path) -> Path:
    """A copy of the channel files, as on a device, without the database."""
    shutil.copytree(store.home.channels_dir, root / "channels", symlinks=True)
    return root


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_cli_refuses_a_store_that_cannot_be_opened(store: Store, tmp_path: Path,
                                                   damage: str) -> None:
    """A damaged shadow.db must not switch off "serve only what the store recorded"."""
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    home = _device_home(store, tmp_path / "device")
    db = home / "shadow.db"
    db.write_bytes(b"\x00not a database\xff" * 64 if damage == "garbage" else b"")
    result = subprocess.run(
        [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shadow serve: error: the store "), lines
    assert str(db) in lines[0] and "refuses to start" in lines[0]


def test_cli_refuses_a_named_store_that_is_missing(store: Store, tmp_path: Path) -> None:
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    home = _device_home(store, tmp_path / "device")
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    for extra, env in (((("--store", url)), ""), ((), url)):
        result = subprocess.run(
            [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", "0", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, "SHADOW_STORE": env},
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "could not be opened" in lines[0], lines
        assert "elsewhere.db" in lines[0]


def test_cli_without_a_store_says_which_checks_apply(store: Store, tmp_path: Path) -> None:
    """No store named and no database file: edge mode, and the serving line says so."""
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow", "serve", "--home",
         str(_device_home(store, tmp_path / "device")), "--port", "0", "--no-reload"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert " on http://127.0.0.1:" in line, line
        assert "no store: runtime checks only" in line and "signatures" not in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
