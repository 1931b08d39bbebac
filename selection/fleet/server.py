"""``shadow fleet serve``: a channel published to devices over HTTP, with staged rollouts.

Endpoints (the wire protocol is ``selection.runtime.remote``'s):

- ``GET /v1/manifest?channel=<channel>``: the offer for the polling device
  (``X-Shadow-Device``): the channel's current version, or the previous one
  for a device outside an active canary; ``ETag`` is the version name, and an
  ``If-None-Match`` that matches is a bodiless 304 (what an idle device costs);
- ``GET /v1/artifact?sha256=<sha256>``: the model bytes of a version on offer
  (``HEAD``: its size and ETag only);
- ``GET /v1/fleet``: every device (last seen, version, counts) and the rollout;
- ``GET /healthz``: 200 while the server has something to offer.

Authentication: ``token`` (a shared bearer token) is required on every
``/v1/`` request when set; ``shadow fleet serve`` refuses to bind a
non-loopback address without one. What it protects is the fleet view and,
more importantly, the reports: a stranger who could post counts could make a
rollout widen or roll back. It does not protect the models: devices trust a
model only if its manifest is signed by a key they hold, whoever served it.
Put TLS in front (a reverse proxy) when the network is not yours: the token
travels in a header.

A control thread (every ``refresh_s``) reads the store (the source of truth
for the channel and its rollout), judges an active canary on the devices'
reports (``fleet.evidence``: only at its planned looks, each recorded as a
``look`` event) and widens it, completes it or rolls it back, each step an
event; a rollback reverts only the rollout's own promotion (``fleet.rollout.
roll_back``: refused, the rollout ``superseded``, if the channel moved on).
Request threads only read the resulting state.
"""

from __future__ import annotations

import hmac
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from selection.errors import ConfigError, ShadowError
from selection.fleet.devices import DeviceRegistry, fleet_file, parse_report
from selection.fleet.evidence import judge
from selection.fleet.offers import FleetState, OfferBook
from selection.fleet.rollout import Rollout, RolloutSuperseded, roll_back, step_event, widen
from selection.runtime.http_handler import JsonHandler, response_head
from selection.runtime.http_server import BoundedServer, ServerLimits
from selection.runtime.remote import (
    ARTIFACT_ROUTE,
    DEVICE_HEADER,
    DEVICE_ID_RE,
    DEVICE_ID_RULE,
    MANIFEST_ROUTE,
    REPORT_HEADER,
    RUNNING_HEADER,
    SHA_RE,
    check_running,
)
from selection.store import Store

DEFAULT_FLEET_PORT = 8780
DEFAULT_REFRESH_S = 0.2
#: Models a device's counts are kept for: on offer now, or recently (a device sends a model's
#: counts again only when they change, so a rollback to a recent one must find them).
KEEP_SHAS = 8
_CHUNK = 256 * 1024


class FleetServer(BoundedServer):
    """Publishes ``channel`` of ``store`` to devices; runs its staged rollouts."""

    def __init__(self, address: tuple[str, int], store: Store, channel: str, *,
                 token: str | None = None, refresh_s: float = DEFAULT_REFRESH_S,
                 log: Callable[[str], None] | None = None,
                 limits: ServerLimits | None = None,
                 error_log: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.channel = channel
        self.token = token
        self.refresh_s = refresh_s
        self.book = OfferBook(store, channel)
        self.registry = DeviceRegistry(fleet_file(store.home.root, channel))
        self.counts = {"polls": 0, "idle_polls": 0, "idle_bytes": 0, "downloads": 0,
                       "download_bytes": 0, "refused": 0}
        self._count_lock = threading.Lock()
        self.last_error: str | None = None
        self.on_step: Callable[[str], None] | None = None
        self._stop = threading.Event()
        # The models whose counts devices may keep on this server: the ones on offer (or in the
        # rollout) now and the few before them, newest last (a rollback to one keeps its counts).
        self._kept_shas: tuple[str, ...] = ()
        self._remember(self.book.refresh())  # at start: a store that cannot be read fails here
        super().__init__(address, _Handler, log, limits, error_log)
        self._control = threading.Thread(target=self._control_loop, daemon=True,
                                         name=f"fleet-{channel}")
        self._control.start()

    def count(self, **deltas: int) -> None:
        """Add to :attr:`counts` (from many request threads)."""
        with self._count_lock:
            for key, delta in deltas.items():
                self.counts[key] += delta

    def state(self) -> FleetState:
        """What is on offer now."""
        return self.book.state

    def server_close(self) -> None:
        self._stop.set()
        self._control.join(timeout=10)
        self.registry.save(force=True)
        super().server_close()

    def kept_shas(self) -> frozenset[str]:
        """The models whose counts the registry keeps (at most :data:`KEEP_SHAS`)."""
        return frozenset(self._kept_shas)

    def _remember(self, state: FleetState) -> None:
        now = state.shas()
        older = [s for s in self._kept_shas if s not in now]
        room = max(0, KEEP_SHAS - len(now))
        self._kept_shas = (*(older[-room:] if room else ()), *sorted(now))

    def control_once(self) -> None:
        """Read the store, judge an active canary, save the device view (the control thread's tick)."""
        state = self.book.refresh()
        self._remember(state)
        rollout = state.rollout
        if rollout is not None and rollout.active:
            if self._judge(rollout):
                self._remember(self.book.refresh())
        self.registry.save()

    def _judge(self, rollout: Rollout) -> bool:
        """Widen or roll back ``rollout`` if the evidence (or the clock) says so; True if it moved."""
        plan = rollout.plan
        self.registry.mark(rollout.rollout_id)  # once: the counts before it do not count
        ids = [d.device_id for d in self.registry.devices()]
        canary = self.registry.arm(rollout.sha256, [d for d in ids if rollout.in_canary(d)],
                                   since=rollout.rollout_id)
        control = self.registry.arm(rollout.previous_sha256, since=rollout.rollout_id)
        verdict = judge(canary, control, alpha=plan.alpha, min_labelled=plan.min_labelled,
                        min_predictions=plan.min_predictions, max_looks=plan.max_looks,
                        looks=rollout.looks)
        evidence = verdict.to_json()
        if verdict.action == "rollback":
            try:
                roll_back(self.store, rollout, verdict.reason, evidence)
            except RolloutSuperseded as exc:
                self._step(f"not rolling back {rollout.candidate_id}: {exc}")
                return True
            self._step(f"rolled back {rollout.candidate_id}: {verdict.reason}")
            return True
        age = (datetime.now(UTC) - rollout.stage_started_at).total_seconds()
        if age >= plan.widen_after_s and (plan.widen_on == "time" or verdict.action == "widen"):
            why = verdict.reason if verdict.action == "widen" else f"{age:.0f} s at this stage"
            after = widen(self.store, rollout, why, evidence)
            self._step(f"rollout of {rollout.candidate_id}: {after.state}, {after.share:.0%}")
            return True
        if verdict.looked:  # spent: recorded, so the next tick (or a restart) does not look again
            self.store.append_event(step_event(rollout, "look", verdict.reason, evidence))
            return True
        return False

    def _step(self, line: str) -> None:
        if self.on_step is not None:
            self.on_step(line)

    def _control_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.control_once()
                self.last_error = None
            except (ShadowError, OSError) as exc:
                self.last_error = str(exc)  # keep offering the last good state
                if self.error_log is not None:
                    self.error_log(f"fleet control: {exc}")
            except Exception:  # noqa: BLE001 - the control thread must outlive any surprise
                self.last_error = "unexpected error; see the server log"
                if self.error_log is not None:
                    self.error_log(f"fleet control (a bug):\n{traceback.format_exc()}")


class _Handler(JsonHandler):
    server: FleetServer
    server_version = "shadow-fleet"

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
            return True
        self.server.count(refused=1)
        self._error(401, "this fleet server needs its token: send 'Authorization: Bearer "
                         "<token>' (the device's --fleet-token-file)")
        return False

    def _query(self) -> dict[str, str]:
        query = urllib.parse.parse_qs(self.path.partition("?")[2], max_num_fields=8)
        return {k: v[0] for k, v in query.items() if len(v) == 1}

    def _manifest(self, body: bytes) -> None:
        if not self._authorized():
            return
        server = self.server
        channel = self._query().get("channel")
        if channel != server.channel:
            self._error(404, f"this server publishes channel {server.channel!r}; got "
                             f"{channel!r}; poll {MANIFEST_ROUTE}?channel={server.channel}")
            return
        device = self.headers.get(DEVICE_HEADER, "")
        if not DEVICE_ID_RE.match(device):
            self._error(400, f"{DEVICE_HEADER} must name the device: {DEVICE_ID_RULE}; got "
                             f"{device[:80]!r}")
            return
        running = self.headers.get(RUNNING_HEADER) or "-"
        try:
            check_running(server.channel, running)
            counts = parse_report(self.headers.get(REPORT_HEADER))
        except ConfigError as exc:
            self._error(400, str(exc))
            return
        state = server.state()
        served = state.for_device(device)
        offered = served.offer.version if served is not None else None
        try:
            server.registry.seen(device, running=None if running == "-" else running,
                                 offered=offered, address=self.client_address[0], counts=counts,
                                 keep=server.kept_shas())
        except ConfigError as exc:
            self._error(429, str(exc))
            return
        server.count(polls=1)
        if served is None:
            self._error(503, f"channel {server.channel!r} has no version to offer yet; promote "
                             "a model first", allow=None)
            return
        offer = served.offer
        if self.headers.get("If-None-Match") == offer.etag:
            head = (f"HTTP/1.1 304 Not Modified\r\nETag: {offer.etag}\r\n"
                    + ("Connection: close\r\n" if self.close_connection else "")
                    + "\r\n").encode("latin-1")
            server.count(idle_polls=1, idle_bytes=self._request_bytes() + len(head))
            self._answered = True
            self.wfile.write(head)
            return
        self._send(200, offer.to_json(), extra=(f"ETag: {offer.etag}",))

    def _artifact(self, body: bytes) -> None:
        if not self._authorized():
            return
        sha = self._query().get("sha256", "")
        if not SHA_RE.match(sha):
            self._error(400, f"sha256 must be 64 hex digits; got {sha[:80]!r}")
            return
        served = self.server.state().by_sha(sha)
        if served is None:
            self._error(404, f"model {sha[:12]} is not on offer on this server (only the "
                             "versions devices are offered are); poll the manifest again")
            return
        size = served.offer.size_bytes
        head = response_head(200, size, close=self.close_connection,
                             content_type="application/octet-stream",
                             date=self.date_time_string(), extra=(f'ETag: "{sha}"',))
        self._answered = True
        self.connection.settimeout(self.server.limits.request_timeout_s)
        self.wfile.write(head)
        if self.command == "HEAD":  # the size and ETag without the bytes
            return
        with open(served.model_path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                self.wfile.write(chunk)
        self.server.count(downloads=1, download_bytes=size)

    def _fleet(self, body: bytes) -> None:
        if not self._authorized():
            return
        self._send(200, fleet_view(self.server))

    def _health(self, body: bytes) -> None:
        served = self.server.state().current
        if served is None:
            self._error(503, "no version to offer yet")
            return
        self._send(200, {"status": "ok", "channel": self.server.channel,
                         "version": served.offer.version})

    def _request_bytes(self) -> int:
        """The request's size on the wire (request line and headers as received)."""
        lines = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        return len(self.raw_requestline) + lines + 2

    routes = {
        MANIFEST_ROUTE: {"GET": _manifest},
        ARTIFACT_ROUTE: {"GET": _artifact},  # HEAD too: JsonHandler routes it to GET
        "/v1/fleet": {"GET": _fleet},
        "/healthz": {"GET": _health},
    }


def fleet_view(server: FleetServer) -> dict[str, Any]:
    """Devices, what they run and should run, and the rollout (``GET /v1/fleet``)."""
    state = server.state()
    now = time.time()
    rollout = state.rollout
    devices = [state.device_row(device, server.channel, now)
               for device in server.registry.devices()]
    return {"channel": server.channel, "devices": devices, "counts": dict(server.counts),
            "rollout": rollout.to_json() if rollout else None,
            "current": state.current.offer.version if state.current else None,
            "last_error": server.last_error}


def make_fleet_server(store: Store, channel: str, host: str = "127.0.0.1",
                      port: int = DEFAULT_FLEET_PORT, **kwargs: Any) -> FleetServer:
    """Bind a :class:`FleetServer` (``serve_forever()``; ``shutdown()`` then ``server_close()``)."""
    return FleetServer((host, port), store, channel, **kwargs)
