"""A real fleet server on 127.0.0.1 over a real store with tiny real ONNX candidates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from selection import Store, promote
from selection.fleet.server import FleetServer, make_fleet_server
from selection.runtime.follow import RemoteChannelRuntime
from selection.signing import KeyPaths
from selection.testing import add_tiny_candidates


@dataclass
class Fleet:
    store: Store
    server: FleetServer
    pub: Path
    tmp: Path

    def device(self, device_id: str, url: str | None = None, **kwargs: object
               ) -> RemoteChannelRuntime:
        options: dict[str, object] = {"poll_s": 0.05, "backoff_max_s": 0.2,
                                      "trusted_keys": [self.pub], **kwargs}
        return RemoteChannelRuntime(url or self.server.url, self.tmp / "devices" / device_id,
                                    device_id=device_id, **options)  # type: ignore[arg-type]


def start_server(store: Store, **kwargs: Any) -> FleetServer:
    server = make_fleet_server(store, "production", port=0, refresh_s=0.05, **kwargs)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


@pytest.fixture
def fleet(store: Store, tmp_path: Path) -> Iterator[Fleet]:
    add_tiny_candidates(store, ["c-a", "c-b", "c-c"])
    promote(store, "c-a")
    server = start_server(store)
    try:
        yield Fleet(store, server, KeyPaths.of(store.home.root).public, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
