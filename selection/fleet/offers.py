"""Which version each device is offered: the channel's current row, or the previous one in a canary.

:class:`OfferBook` turns the store's state (the channel's current history
row and its staged rollout, ``fleet.rollout``) into offers built from the
home's version folders: the exact manifest bytes, the signature file and the
model, hashed once per version (the server never offers bytes that do not
hash to what the manifest says). ``refresh`` is called by the fleet server's
control thread; request threads only read :attr:`state`, one reference, so a
poll never waits on the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selection.channels import promotion
from selection.channels.layout import (
    MANIFEST_FILE,
    MODEL_FILE,
    VERSIONS_DIR,
    version_history_id,
    version_name,
)
from selection.errors import IntegrityError, NotFoundError
from selection.fleet.devices import Device
from selection.fleet.rollout import Rollout, load_rollout
from selection.runtime.remote import Offer, artifact_path
from selection.signing import SIGNATURE_FILE
from selection.store import Store


@dataclass(frozen=True)
class Served:
    """An offer and the file its model bytes come from."""

    offer: Offer
    model_path: Path


@dataclass(frozen=True)
class FleetState:
    """What the server offers right now."""

    current: Served | None
    previous: Served | None  # only while a canary is active
    rollout: Rollout | None

    def for_device(self, device_id: str) -> Served | None:
        """The version ``device_id`` should run."""
        rollout = self.rollout
        if rollout is not None and rollout.active and self.previous is not None \
                and not rollout.in_canary(device_id):
            return self.previous
        return self.current

    def device_row(self, device: Device, channel: str, now: float) -> dict[str, Any]:
        """What ``GET /v1/fleet`` and ``shadow fleet list`` show of one device.

        ``ahead_of_store``: the device runs a newer history row than the store's current one
        (the store was restored from an older backup, or replaced): devices never go back to
        an older row (``runtime.remote``), so it waits until the channel's row passes its own.
        """
        served = self.for_device(device.device_id)
        assigned = served.offer.version if served else None
        rollout = self.rollout
        running_row = version_history_id(channel, device.running)
        current_row = self.current.offer.history_id if self.current else None
        return {
            "device_id": device.device_id, "running": device.running, "assigned": assigned,
            "in_sync": assigned is not None and device.running == assigned,
            "ahead_of_store": running_row is not None
            and (current_row is None or running_row > current_row),
            "canary": bool(rollout and rollout.active and rollout.in_canary(device.device_id)),
            "last_seen": device.last_seen, "seen_s_ago": round(now - device.last_seen_s, 3),
            "polls": device.polls, "rollout": rollout.state if rollout else None,
            "address": device.address}

    def shas(self) -> frozenset[str]:
        """The models whose counts matter now: on offer, or either side of the rollout."""
        found = {s.offer.sha256 for s in (self.current, self.previous) if s is not None}
        if self.rollout is not None:
            found |= {self.rollout.sha256, self.rollout.previous_sha256}
        return frozenset(found)

    def by_sha(self, sha256: str) -> Served | None:
        """The offer whose model is ``sha256`` (what ``GET /v1/artifact`` serves)."""
        for served in (self.current, self.previous):
            if served is not None and served.offer.sha256 == sha256:
                return served
        return None


class OfferBook:
    """Builds :class:`FleetState` for one channel of one store (offers cached by version)."""

    def __init__(self, store: Store, channel: str) -> None:
        self.store = store
        self.channel = channel
        self._cache: dict[str, Served] = {}
        self.state = FleetState(None, None, None)

    def refresh(self) -> FleetState:
        """Read the store again; returns (and keeps) the new state."""
        now = promotion.current(self.store, self.channel)
        rollout = load_rollout(self.store, self.channel)
        current = self._served(now.history_id, now.sha256) if now is not None else None
        previous = None
        if rollout is not None and rollout.active:
            previous = self._served(rollout.previous_history_id, rollout.previous_sha256)
        self.state = FleetState(current, previous, rollout)
        return self.state

    def _served(self, history_id: int, sha256: str) -> Served:
        name = version_name(self.channel, history_id, sha256)
        served = self._cache.get(name)
        if served is not None:
            return served
        folder = self.store.home.channels_dir / VERSIONS_DIR / name
        try:
            manifest = (folder / MANIFEST_FILE).read_bytes()
            signature = (folder / SIGNATURE_FILE).read_bytes()
            model = (folder / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"version folder {folder} is missing or incomplete; run "
                                "`shadow doctor --repair` to rebuild it from the store") from None
        if hashlib.sha256(model).hexdigest() != sha256:
            raise IntegrityError(f"{folder / MODEL_FILE} does not hash to {sha256[:12]}; not "
                                 "offering it; run `shadow doctor --repair`")
        offer = Offer(version=name, history_id=history_id, sha256=sha256, size_bytes=len(model),
                      manifest=manifest, signature=signature, artifact=artifact_path(sha256),
                      etag=f'"{name}"')
        served = Served(offer, folder / MODEL_FILE)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[name] = served
        return served
