"""``shadow serve`` under hostile or slow clients: raw sockets against a real server.

The server runs in-process on a loopback port with short limits (idle 1.5 s,
request 1 s) so a deadline that does not fire shows up as a test failure,
not a hang: every socket here has its own timeout.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection import Store, promote
from selection.errors import ConfigError
from selection.runtime import ChannelRuntime
from selection.runtime.http_checks import FOLLOW_UP, Case, cases, check_case, read_reply, serving
from selection.runtime.server import ModelServer, ServerLimits, make_server
from selection.testing import FEATURES, add_tiny_candidates

REPO = Path(__file__).resolve().parents[3]
IDLE_S = 1.5
REQUEST_S = 1.0
GRACE_S = 1.5  # the server lingers up to 0.5 s before it closes; a busy machine adds more
BODY = json.dumps({"rows": [[0.5] * len(FEATURES)]}).encode()


def _serve(store: Store, limits: ServerLimits) -> Iterator[ModelServer]:
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    runtime = ChannelRuntime(store.home.channels_dir, reload=False)
    runtime.start()
    lines: list[str] = []
    srv = make_server(runtime, "127.0.0.1", 0, log=lines.append, limits=limits)
    srv.lines = lines  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    runtime.stop()


@pytest.fixture
def server(store: Store) -> Iterator[ModelServer]:
    yield from _serve(store, ServerLimits(idle_timeout_s=IDLE_S, request_timeout_s=REQUEST_S))


def _address(srv: ModelServer) -> tuple[str, int]:
    host, port = srv.server_address[:2]
    return str(host), int(port)


@pytest.mark.parametrize("case", cases(len(FEATURES), FEATURES), ids=lambda c: c.name)
def test_malformed_request_gets_json_4xx_and_the_server_keeps_serving(
    server: ModelServer, case: Case
) -> None:
    assert check_case(*_address(server), case) is None
    # Nothing a client sends may reach the log as a traceback (a bug), only as a line.
    assert not any("Traceback" in line for line in server.lines)  # type: ignore[attr-defined]


def test_the_checker_catches_a_desync() -> None:
    """check_case itself must fail when an answer leaves bytes behind (no test that cannot fail)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def bad_server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            # Answers the body-carrying GET, then parses its body as the next request.
            ok = b'{"status":"ok"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(ok), ok))
            conn.recv(65536)
            err = b'{"error":"bad request line","status":400}'
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(err), err))

    thread = threading.Thread(target=bad_server, daemon=True)
    thread.start()
    case = next(c for c in cases() if c.name == "GET with a body")
    wrong = check_case("127.0.0.1", port, case, timeout=5)
    assert wrong is not None and "keep-alive desync" in wrong
    listener.close()


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent before."""
    received = b""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False, received
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def _keep_asking(srv: ModelServer, seconds: float) -> list[float]:
    """Predict on a keep-alive connection for ``seconds``; each answer's latency."""
    conn = http.client.HTTPConnection(*_address(srv), timeout=5)
    latencies = []
    deadline = time.monotonic() + seconds
    for _ in range(100_000):
        if time.monotonic() > deadline:
            break
        start = time.monotonic()
        conn.request("POST", "/predict", body=BODY)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
        latencies.append(time.monotonic() - start)
    conn.close()
    return latencies


@pytest.mark.parametrize("partial", [
    b"POST /predict HTTP/1.1\r\nHost: t\r\n",  # half the headers, then silence
    b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n{\"rows\"",  # short body
])
def test_a_slow_request_is_closed_after_the_timeout_while_others_are_served(
    server: ModelServer, partial: bytes
) -> None:
    slow = socket.create_connection(_address(server), timeout=10)
    slow.sendall(partial)
    start = time.monotonic()
    latencies = _keep_asking(server, REQUEST_S * 0.8)  # served while the slow one hangs
    closed, received = _closed_within(slow, REQUEST_S + GRACE_S - (time.monotonic() - start))
    waited = time.monotonic() - start
    slow.close()
    assert closed, f"the slow connection was still open after {waited:.1f} s"
    assert waited >= REQUEST_S * 0.9  # closed by the deadline, not at once
    assert b" 408 " in received.split(b"\r\n", 1)[0] and b'"status":408' in received
    assert len(latencies) >= 5 and max(latencies) < REQUEST_S


def test_a_trickling_client_is_closed_by_the_deadline_not_per_read(server: ModelServer) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the deadline still closes it."""
    sock = socket.create_connection(_address(server), timeout=10)
    start = time.monotonic()
    closed = False
    for byte in b"POST /predict HTTP/1.1\r\nHost: trickle\r\nX-Pad: " + b"a" * 100:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        closed, received = _closed_within(sock, 0.2)
        if closed:
            break
        assert time.monotonic() - start < REQUEST_S + GRACE_S, "still open past the deadline"
    sock.close()
    assert closed and time.monotonic() - start < REQUEST_S + GRACE_S


def test_an_idle_connection_is_closed_quietly_after_the_idle_timeout(server: ModelServer) -> None:
    sock = socket.create_connection(_address(server), timeout=10)
    sock.sendall(FOLLOW_UP)
    assert read_reply(sock).status == 200  # a served keep-alive connection, now idle
    start = time.monotonic()
    closed, received = _closed_within(sock, IDLE_S + GRACE_S)
    sock.close()
    assert closed and received == b""  # no answer: there was no request
    assert time.monotonic() - start >= IDLE_S * 0.9
    assert serving(*_address(server)) is None


def test_many_concurrent_connections_are_all_served(server: ModelServer) -> None:
    """A burst of 200 connections: the listen backlog (was 5) must hold them all."""
    n_clients, per_client = 200, 3
    failures: list[str] = []
    barrier = threading.Barrier(n_clients, timeout=30)

    def client() -> None:
        try:
            barrier.wait()
            conn = http.client.HTTPConnection(*_address(server), timeout=30)
            for _ in range(per_client):
                conn.request("POST", "/predict", body=BODY)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    failures.append(f"{response.status} {body[:80]!r}")
            conn.close()
        except Exception as exc:  # noqa: BLE001 - counted, then asserted
            failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert not any(thread.is_alive() for thread in threads)


def test_connections_past_the_limit_get_a_json_503(store: Store) -> None:
    limits = ServerLimits(idle_timeout_s=5, request_timeout_s=5, max_connections=2)
    srv_iter = _serve(store, limits)
    srv = next(srv_iter)
    try:
        held = [socket.create_connection(_address(srv), timeout=5) for _ in range(2)]
        for sock in held:  # make sure both are accepted (and counted) before the third
            sock.sendall(FOLLOW_UP)
            assert read_reply(sock).status == 200
        with socket.create_connection(_address(srv), timeout=5) as third:
            reply = read_reply(third)
        assert reply.status == 503 and reply.headers["connection"] == "close"
        assert "limit of 2 connections" in json.loads(reply.body)["error"]
        held[0].sendall(b"GET /model HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = json.loads(read_reply(held[0]).body)
        assert answer["server"]["connections"] == 2 and answer["server"]["max_connections"] == 2
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while srv.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.connections == 0  # freed slots: a new client is served again
        assert serving(*_address(srv)) is None
    finally:
        next(srv_iter, None)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"idle_timeout_s": 0}, "idle_timeout_s must be a positive number of seconds; got 0"),
    ({"request_timeout_s": float("inf")}, "request_timeout_s must be a positive number"),
    ({"max_connections": 0}, "max_connections must be a positive integer; got 0"),
])
def test_limits_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerLimits(**kwargs)


def test_cli_refuses_a_bad_timeout(store: Store) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shadow", "serve", "--home", str(store.home.root),
         "--request-timeout", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    assert result.returncode == 2
    assert "--request-timeout must be in 0.01..3600 seconds; got 0" in result.stderr


def test_a_pipelined_request_whose_body_stalls_gets_a_408(server: ModelServer) -> None:
    """The second request's head came in with the first: it has started, so its stall is a 408."""
    sock = socket.create_connection(_address(server), timeout=10)
    first = (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: " + str(len(BODY)).encode()
             + b"\r\n\r\n" + BODY)
    second = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n{\"rows\""
    sock.sendall(first + second)  # one write: both land in the server's read buffer at once
    start = time.monotonic()
    received = b""
    deadline = start + IDLE_S + REQUEST_S + GRACE_S
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    waited = time.monotonic() - start
    sock.close()
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2, received
    assert answers[1].startswith(b"408 ") and b'"status":408' in answers[1], answers[1]
    assert REQUEST_S * 0.9 <= waited < IDLE_S + GRACE_S  # the request deadline, not the idle one
