"""What a client cannot do to a fleet server: grow its memory, lock devices out, inject text.

Real HTTP on 127.0.0.1 against the real fleet server over a real store.
"""

from __future__ import annotations

import json
import os
import time

from selection.errors import ConfigError
from selection.fleet.devices import DeviceRegistry
from selection.runtime.remote import DEVICE_HEADER, REPORT_HEADER, RUNNING_HEADER
from tests.selection.fleet.conftest import Fleet
from tests.selection.fleet.test_serve_follow import get, wait_for


def _poll(fleet: Fleet, device: str, **headers: str) -> tuple[int, dict, bytes]:
    return get(fleet.server.url, "/v1/manifest?channel=production",
               {DEVICE_HEADER: device, **headers})


def test_counts_are_kept_only_for_the_models_that_matter(fleet: Fleet) -> None:
    wait_for(lambda: fleet.server.state().current is not None)
    served = fleet.server.state().current
    assert served is not None
    sha = served.offer.sha256
    for _ in range(50):  # 50 polls x 16 made-up models, and the real one
        report = {os.urandom(32).hex(): [1, 0, 0, 0] for _ in range(15)}
        report[sha] = [7, 1, 3, 2]
        status, _, body = _poll(fleet, "d1", **{RUNNING_HEADER: "-",
                                                REPORT_HEADER: json.dumps(report)})
        assert status == 200, body
    [device] = fleet.server.registry.devices()
    assert device.counts == {sha: [7, 1, 3, 2]}  # before: 750 entries, and growing
    fleet.server.registry.save(force=True)
    saved = json.loads(fleet.server.registry.path.read_text())  # type: ignore[union-attr]
    assert len(saved["devices"][0]["counts"]) == 1


def test_the_running_header_must_be_a_version_name(fleet: Fleet) -> None:
    for bad in ("x" * 4000, "\x1b[2Jproduction-1-abc", "other-1-0123456789ab",
                "production-1-0123456789ab; rm"):
        status, headers, body = _poll(fleet, "d2", **{RUNNING_HEADER: bad})
        assert status == 400, bad
        assert "application/json" in headers.get("Content-Type", "")
        assert RUNNING_HEADER in json.loads(body)["error"]
    assert fleet.server.registry.devices() == []  # nothing stored
    status, _, _ = _poll(fleet, "d2", **{RUNNING_HEADER: "production-1-0123456789ab"})
    assert status == 200  # the server keeps serving
    assert fleet.server.registry.devices()[0].running == "production-1-0123456789ab"


def test_a_full_registry_makes_room_by_forgetting_long_unseen_devices(fleet: Fleet) -> None:
    registry = fleet.server.registry
    registry.max_devices, registry.evict_unseen_s = 3, 0.5
    for device in ("fake-1", "fake-2", "fake-3"):
        assert _poll(fleet, device)[0] == 200
    status, _, body = _poll(fleet, "real-1")
    assert status == 429 and "every one polled within" in json.loads(body)["error"]
    time.sleep(0.6)
    assert _poll(fleet, "fake-2")[0] == 200  # still polling: kept
    assert _poll(fleet, "real-1")[0] == 200  # takes fake-1's place (unseen longest)
    assert [d.device_id for d in registry.devices()] == ["fake-2", "fake-3", "real-1"]


def test_registry_bound_without_a_server() -> None:
    registry = DeviceRegistry(None, max_devices=1, evict_unseen_s=3600)
    registry.seen("a", running=None, offered=None, address="127.0.0.1", counts={})
    try:
        registry.seen("b", running=None, offered=None, address="127.0.0.1", counts={})
    except ConfigError as exc:
        assert "at most 1 devices" in str(exc)
    else:
        raise AssertionError("a full registry of recent devices must refuse a new one")


def test_counts_stay_bounded_even_without_a_keep_list() -> None:
    registry = DeviceRegistry(None)
    for _ in range(100):  # the reviewer's reg.py: 16 new models per poll
        registry.seen("d1", running=None, offered=None, address="127.0.0.1",
                      counts={os.urandom(32).hex(): [1, 0, 0, 0] for _ in range(16)})
    assert len(registry.devices()[0].counts) == 16  # before: 1600
