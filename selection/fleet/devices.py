"""What the fleet server knows of its devices: last seen, the version each runs, their counts.

Bounded whatever devices send: counts are kept only for the models that
matter to this channel (``keep``: the fleet server passes the models on
offer or in its rollout now and the few before them, at most
``fleet.server.KEEP_SHAS``, 8, per device; without ``keep``, the
:data:`MAX_REPORTED_MODELS` reported last), the running version must be ``-`` or a
version name of the channel (``runtime.remote.check_running``), and at most
``max_devices`` devices are tracked, a full registry making room by forgetting
the device seen least recently once it has been unseen for ``evict_unseen_s``
(an hour by default).

Devices tell the server on every poll (``runtime.remote``'s headers): their
id, the version they serve and their cumulative counts per model
(predictions, failed predictions, labelled requests, correct ones).
Cumulative counts make a retried or lost poll harmless: the newest report of
a device replaces its last one, nothing is added twice.

The registry lives in memory (a poll must not wait on a database write) and
is written to ``$SHADOW_HOME/fleet/<channel>.json`` atomically at most once
per ``save_every_s`` when something changed, and on stop; ``shadow fleet
list`` reads that file, and a restarted server loads it, so last-seen times
and the canary's evidence survive a restart. With the counts goes the *mark*
of the current rollout: every device's counts when the server first saw it,
so a canary is judged on what both models did since it started (a stream
that drifted last week does not count against either side). At most two seconds of reports
are lost on a SIGKILL; the next poll of each device reports them again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from selection.atomic import write_bytes_atomic
from selection.errors import ConfigError
from selection.fleet.evidence import Arm
from selection.runtime.remote import SHA_RE

#: Models a device may report counts for in one poll (older ones are of little use).
MAX_REPORTED_MODELS = 16
#: Devices one server tracks. When full, a new device takes the place of the device seen
#: least recently if that one was unseen for EVICT_UNSEEN_S; else it is refused with a 429.
MAX_DEVICES = 100_000
#: One hour: a device that polls (every few seconds) is never forgotten to make room; made-up
#: ids can lock new devices out for at most this long after they stop polling.
EVICT_UNSEEN_S = 3600.0


def fleet_file(home_root: str | Path, channel: str) -> Path:
    """Where a channel's fleet view is kept."""
    return Path(home_root) / "fleet" / f"{channel}.json"


@dataclass
class Device:
    """One device as last seen."""

    device_id: str
    first_seen: str
    last_seen: str
    last_seen_s: float
    address: str
    running: str | None
    offered: str | None = None
    polls: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)  # sha256 -> 4 counts

    def arm(self, sha256: str) -> Arm:
        """This device's counts for one model."""
        c = self.counts.get(sha256)
        return Arm(*c) if c else Arm()


def parse_report(text: str | None) -> dict[str, list[int]]:
    """The ``X-Shadow-Report`` header; ConfigError (a 400) if it is not the documented form."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or len(data) > MAX_REPORTED_MODELS or not all(
            isinstance(k, str) and SHA_RE.match(k) and isinstance(v, list) and len(v) == 4
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 for x in v)
            and v[1] <= v[0] and v[3] <= v[2]
            for k, v in data.items()):
        raise ConfigError("X-Shadow-Report must be a JSON object of at most "
                          f"{MAX_REPORTED_MODELS} sha256 -> [predictions, errors, labelled, "
                          "correct] (non-negative integers, errors <= predictions, correct <= "
                          "labelled)")
    return {k: list(v) for k, v in data.items()}


class DeviceRegistry:
    """The devices of one channel's fleet server (thread-safe)."""

    def __init__(self, path: Path | None, *, save_every_s: float = 1.0,
                 max_devices: int = MAX_DEVICES, evict_unseen_s: float = EVICT_UNSEEN_S) -> None:
        self.path = path
        self.save_every_s = save_every_s
        self.max_devices = max_devices
        self.evict_unseen_s = evict_unseen_s
        self._lock = threading.Lock()
        # least recently seen first (a poll moves its device to the end): eviction is O(1)
        self._devices: OrderedDict[str, Device] = OrderedDict()
        # rollout id -> device -> sha256 -> counts when the server first saw that rollout
        self._marks: dict[str, dict[str, dict[str, list[int]]]] = {}
        self._dirty = False
        self._saved_at = 0.0
        if path is not None and path.is_file():
            self._load(path)

    def seen(self, device_id: str, *, running: str | None, offered: str | None, address: str,
             counts: dict[str, list[int]], keep: Iterable[str] | None = None) -> None:
        """Record one poll; ``keep``: the models whose counts are kept (None: all reported)."""
        now = datetime.now(UTC)
        with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                self._make_room()
                device = Device(device_id, now.isoformat(), now.isoformat(), time.time(),
                                address, running)
                self._devices[device_id] = device
            self._devices.move_to_end(device_id)
            device.last_seen, device.last_seen_s = now.isoformat(), time.time()
            device.address, device.running, device.offered = address, running, offered
            device.polls += 1
            for sha, c in counts.items():  # newest report last: the cap below drops the oldest
                device.counts.pop(sha, None)
                device.counts[sha] = c
            if len(device.counts) > MAX_REPORTED_MODELS:  # a bound even without ``keep``
                device.counts = dict(list(device.counts.items())[-MAX_REPORTED_MODELS:])
            if keep is not None:
                wanted = set(keep)
                # Counts are cumulative on the device: one dropped now comes back whole with its
                # next report if its model matters again.
                device.counts = {s: c for s, c in device.counts.items() if s in wanted}
            self._dirty = True

    def _make_room(self) -> None:
        """Forget the least recently seen device if the registry is full (ConfigError if none may go)."""
        if len(self._devices) < self.max_devices:
            return
        oldest = next(iter(self._devices.values()), None)
        if oldest is None or time.time() - oldest.last_seen_s < self.evict_unseen_s:
            raise ConfigError(f"this fleet server tracks at most {self.max_devices} devices and "
                              f"every one polled within {self.evict_unseen_s:g} s; retry later "
                              "or run another `shadow fleet serve` for the rest")
        # Its rollout mark stays (bounded by the devices at mark time): if it polls again,
        # only what it counted since the rollout started counts.
        del self._devices[oldest.device_id]

    def devices(self) -> list[Device]:
        """Copies of every device, by id."""
        with self._lock:
            return [Device(**{**asdict(d), "counts": {k: list(v) for k, v in d.counts.items()}})
                    for _, d in sorted(self._devices.items())]

    def arm(self, sha256: str, device_ids: Iterable[str] | None = None, *,
            since: int | None = None) -> Arm:
        """Counts for ``sha256`` summed over ``device_ids`` (every device if None).

        ``since`` (a rollout id whose :meth:`mark` was taken): only what was counted
        after it, so both sides of a canary are compared over the same period.
        """
        with self._lock:
            wanted = self._devices if device_ids is None else {
                d: self._devices[d] for d in device_ids if d in self._devices}
            marks = self._marks.get(str(since), {}) if since is not None else {}
            total = Arm()
            for device_id, device in wanted.items():
                now, then = device.arm(sha256), marks.get(device_id, {}).get(sha256)
                if then is not None:
                    now = Arm(*(max(0, a - b) for a, b in zip(
                        (now.predictions, now.errors, now.labelled, now.correct), then,
                        strict=True)))
                total = total + now
            return total

    def mark(self, rollout_id: int) -> bool:
        """Remember every device's counts now, once per rollout id; True if taken now."""
        with self._lock:
            key = str(rollout_id)
            if key in self._marks:
                return False
            self._marks = {key: {d: {sha: list(c) for sha, c in dev.counts.items()}
                                 for d, dev in self._devices.items()}}  # the newest rollout only
            self._dirty = True
            return True

    def save(self, *, force: bool = False) -> bool:
        """Write the view if it changed (and ``save_every_s`` passed, unless ``force``)."""
        if self.path is None:
            return False
        with self._lock:
            if not self._dirty or (not force and time.monotonic() - self._saved_at
                                   < self.save_every_s):
                return False
            data = {"devices": [asdict(d) for _, d in sorted(self._devices.items())],
                    "marks": self._marks}
            self._dirty = False
            self._saved_at = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, (json.dumps(data, indent=1) + "\n").encode())
        return True

    def _load(self, path: Path) -> None:
        self._devices = OrderedDict((d.device_id, d) for d in sorted(
            read_devices(path), key=lambda d: d.last_seen_s))
        try:
            marks = json.loads(path.read_text(encoding="utf-8")).get("marks", {})
        except ValueError:
            marks = {}
        self._marks = marks if isinstance(marks, dict) else {}


def read_devices(path: Path) -> list[Device]:
    """The devices a fleet file lists ([] if there is none); ConfigError if it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Device(**d) for d in data["devices"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} must be the fleet view `shadow fleet serve` writes; it does "
                          f"not parse ({exc}); move it away (the server rebuilds it as devices "
                          "poll)") from None
