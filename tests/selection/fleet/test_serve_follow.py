"""Serving a channel to devices and following it: real HTTP on 127.0.0.1, real ONNX Runtime."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from selection import promote
from selection.channels.promotion import rollback
from selection.errors import ConfigError
from selection.fleet.devices import fleet_file, read_devices
from selection.runtime import NoModelError
from selection.runtime.follow import RemoteChannelRuntime
from selection.runtime.remote import FleetClient
from selection.signing import KeyPaths, ensure_signing_key
from selection.testing import FEATURES
from tests.selection.fleet.conftest import Fleet, start_server

ROW = {"rows": [[0.5] * len(FEATURES)]}


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", path, headers=headers or {})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, dict(answer.getheaders()), body


def test_an_idle_poll_is_a_bodiless_304(fleet: Fleet) -> None:
    client = FleetClient(fleet.server.url, "production", "dev-1")
    offer = client.offer(None, None)
    assert offer is not None and offer.version.startswith("production-1-")
    assert offer.etag == f'"{offer.version}"'
    for _ in range(5):
        assert client.offer(offer.etag, offer.version) is None
    counts = fleet.server.counts
    assert counts["idle_polls"] == 5
    assert 100 < counts["idle_bytes"] / counts["idle_polls"] < 600


def test_a_device_follows_promotions_and_rollbacks_without_a_failed_prediction(
        fleet: Fleet) -> None:
    runtime = fleet.device("dev-1")
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                runtime.predict(ROW)
            except BaseException as exc:  # noqa: BLE001 - counted, the test fails on any
                failures.append(exc)

    with runtime:
        assert runtime.model.candidate_id == "c-a"
        worker = threading.Thread(target=load)
        worker.start()
        promote(fleet.store, "c-b")
        wait_for(lambda: runtime.model.candidate_id == "c-b")
        rollback(fleet.store)
        wait_for(lambda: runtime.model.candidate_id == "c-a")
        for candidate in ("c-c", "c-b", "c-c"):
            promote(fleet.store, candidate)
            wait_for(lambda c=candidate: runtime.model.candidate_id == c)
        # The cache keeps the 3 newest versions, the one serving included.
        assert len(list((runtime.channels_dir / ".versions").iterdir())) == 3
        stop.set()
        worker.join()
        assert runtime.status()["swaps"] == 5
        # The poll after a swap tells the server what the device runs now.
        wait_for(lambda: fleet.server.registry.devices()[0].running == runtime.model.version)
    assert failures == []
    # The server knows the device, what it runs, and keeps it in its fleet file.
    fleet.server.registry.save(force=True)
    [device] = read_devices(fleet_file(fleet.store.home.root, "production"))
    assert device.device_id == "dev-1" and device.running and device.running.endswith(
        runtime.model.sha256[:12])
    assert device.counts[runtime.model.sha256][0] > 0  # predictions reported


def test_a_restarted_device_serves_its_cached_model_offline(fleet: Fleet) -> None:
    with fleet.device("dev-1") as runtime:
        promote(fleet.store, "c-b")
        wait_for(lambda: runtime.model.candidate_id == "c-b")
        for _ in range(3):
            runtime.predict(ROW)
        sha = runtime.model.sha256
        wait_for(lambda: fleet.server.registry.devices()[0].counts.get(sha, [0])[0] == 3)
    fleet.server.shutdown()
    fleet.server.server_close()
    offline = fleet.device("dev-1", first_model_timeout_s=0.5)
    with offline:
        assert offline.model.candidate_id == "c-b"
        # Its counts survive the restart (the server compares cumulative counts).
        assert offline.counts()[sha] == (3, 0, 0, 0)
        assert offline.predict(ROW)["candidate_id"] == "c-b"
        wait_for(lambda: offline.status()["remote"]["failures"] >= 1)
    # A device with an empty cache and no server says so in one message.
    with pytest.raises(NoModelError, match="no cached model"):
        fleet.device("dev-new", first_model_timeout_s=0.3).start()


def test_a_version_signed_by_another_key_is_refused_and_not_kept(fleet: Fleet) -> None:
    other = ensure_signing_key(KeyPaths.of(fleet.tmp / "other-home"))[0].public
    # The device trusts the real key at first, then only another one (a rotated fleet).
    with fleet.device("dev-1") as runtime:
        runtime.trusted_keys = type(runtime.trusted_keys).load([other])  # type: ignore[union-attr]
        promote(fleet.store, "c-b")
        wait_for(lambda: runtime.status()["remote"]["failures"] >= 2)
        assert runtime.model.candidate_id == "c-a"
        versions = sorted(p.name for p in (runtime.channels_dir / ".versions").iterdir())
        assert len(versions) == 1  # the refused version left no folder behind
        assert "signed" in (runtime.status()["remote"]["last_error"] or "")


def test_a_device_needs_trusted_keys(fleet: Fleet) -> None:
    with pytest.raises(ConfigError, match="trusted_keys"):
        RemoteChannelRuntime(fleet.server.url, fleet.tmp / "d", device_id="d",
                             trusted_keys=None)  # type: ignore[arg-type]


def test_bad_requests_are_4xx_json_and_the_server_keeps_serving(fleet: Fleet) -> None:
    url = fleet.server.url
    cases = [
        ("/v1/manifest?channel=production", {}, 400, "X-Shadow-Device"),
        ("/v1/manifest?channel=production", {"X-Shadow-Device": "bad id!"}, 400, "device"),
        ("/v1/manifest?channel=other", {"X-Shadow-Device": "d1"}, 404, "publishes channel"),
        ("/v1/manifest?channel=production", {"X-Shadow-Device": "d1",
                                             "X-Shadow-Report": "{\"x\": 1}"}, 400, "Report"),
        ("/v1/artifact?sha256=zz", {}, 400, "64 hex"),
        ("/v1/artifact?sha256=" + "0" * 64, {}, 404, "not on offer"),
        ("/v2/nothing", {}, 404, "no endpoint"),
    ]
    for path, headers, status, words in cases:
        got, _, body = get(url, path, headers)
        assert got == status, (path, body)
        assert words in json.loads(body)["error"]
    got, headers, _ = get(url, "/v1/manifest?channel=production", {"X-Shadow-Device": "d1"})
    assert got == 200 and headers["ETag"].startswith('"production-1-')


def test_a_token_is_required_when_set(fleet: Fleet) -> None:
    server = start_server(fleet.store, token="s3cret-token-of-the-fleet")
    try:
        got, _, body = get(server.url, "/v1/manifest?channel=production",
                           {"X-Shadow-Device": "d1"})
        assert got == 401 and "Bearer" in json.loads(body)["error"]
        got, _, _ = get(server.url, "/v1/fleet", {"Authorization": "Bearer wrong"})
        assert got == 401
        with fleet.device("dev-1", url=server.url, token="s3cret-token-of-the-fleet") as runtime:
            assert runtime.model.candidate_id == "c-a"
        with pytest.raises(NoModelError, match="401"):
            fleet.device("dev-2", url=server.url, first_model_timeout_s=0.2).start()
    finally:
        server.shutdown()
        server.server_close()
