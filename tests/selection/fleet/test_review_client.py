"""The device side under a misbehaving network: redirects, a stop mid-download; HEAD; follow's log.

Real HTTP on 127.0.0.1 (the fleet server, a slow proxy, plain redirecting servers).
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from selection import promote
from selection.fleet.chaos import FaultyProxy
from selection.runtime.remote import FetchError, FleetClient
from selection.testing import add_tiny_candidates
from tests.selection.fleet.conftest import Fleet
from tests.selection.fleet.test_serve_follow import wait_for


@contextmanager
def _http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_token_never_follows_a_redirect() -> None:
    seen: list[str | None] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            self.send_response(304)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with _http(Elsewhere) as other:
        class Redirect(Elsewhere):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(302)
                self.send_header("Location", other + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

        with _http(Redirect) as url:
            client = FleetClient(url, "production", "dev-1", token="s3cret")
            with pytest.raises(FetchError, match="redirect"):
                client.offer(None, None)
    assert seen == []  # before the fix: ['Bearer s3cret'] at the other host


def test_stop_during_a_large_download_returns_promptly_and_installs_nothing(
        fleet: Fleet) -> None:
    add_tiny_candidates(fleet.store, ["c-big"], sweep_id="sw-big", hidden=2048)
    host, port = fleet.server.server_address[:2]
    proxy = FaultyProxy((str(host), int(port)), slow_chunk=2048, slow_delay_s=0.05)
    try:
        runtime = fleet.device("dev-1", url=proxy.url, timeout_s=10)
        runtime.start()
        before = (runtime.channels_dir / "production").readlink()
        proxy.mode = "slow"
        promote(fleet.store, "c-big")  # ~70 KB at 40 KB/s: seconds of download
        staging = runtime.channels_dir / ".versions"
        wait_for(lambda: any(p.stat().st_size > 0 for p in staging.glob(".tmp-*/model.onnx")))
        t = time.monotonic()
        runtime.stop()
        took = time.monotonic() - t
        assert took < 1.0, took  # before the fix: until the download ended (or 15 s)
        proxy.mode = "pass"
        time.sleep(0.5)
        assert (runtime.channels_dir / "production").readlink() == before
        assert runtime.model.candidate_id == "c-a"
        assert not [t for t in threading.enumerate() if t.name == "fleet-sync-production"
                    and t.is_alive()]
    finally:
        proxy.close()


def test_head_of_an_artifact_is_its_size_without_the_bytes(fleet: Fleet) -> None:
    served = fleet.server.state().current
    assert served is not None
    host, port = fleet.server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=5)
    conn.request("HEAD", served.offer.artifact)
    answer = conn.getresponse()
    assert answer.status == 200 and answer.read() == b""
    assert int(answer.getheader("Content-Length") or 0) == served.offer.size_bytes
    conn.close()


def test_fleet_follow_closes_its_log_when_it_cannot_start(fleet: Fleet, tmp_path: Path) -> None:
    import socket

    from shadow.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["fleet", "follow", fleet.server.url, "--trust-key", str(fleet.pub),
                     "--device-id", "dev-9", "--cache", str(tmp_path / "cache"),
                     "--port", str(port)])
    assert code == 2
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.name.startswith("prediction-log-") and t.is_alive()], 5)
