"""``RemoteChannelRuntime``: a :class:`ChannelRuntime` that follows a fleet server's URL.

The device's cache folder is a channels folder (``runtime.remote``): the
runtime serves whatever verified version the cache's link points at, exactly
as it serves a local channel, and a sync thread keeps the cache in step with
the server:

- every ``poll_s`` one conditional request (``If-None-Match``); a 304 costs a
  few hundred bytes and nothing else;
- an offer of another version is downloaded, verified whole (sha256, the
  manifest's Ed25519 signature against ``trusted_keys``, the channel binding,
  a smoke inference) and only then linked; the runtime then swaps its one
  model reference, so requests in flight finish on the model they started on;
- a poll or an install that fails (server gone, cut-off download, corrupted
  bytes, a bad signature) leaves the current model serving and is retried
  after ``poll_s * 2**failures`` (capped at ``backoff_max_s``, with jitter so
  a fleet does not retry in step);
- a restart comes up on the cache's link with no network at all; only a device
  whose cache is empty waits (``first_model_timeout_s``) for a first download.

Each poll tells the server which version this device runs and, per model,
how many predictions it made, how many failed and, when the runtime keeps a
prediction log whose labels came back (``selection.live``), how many labelled
requests it answered and how many of them right: the evidence a staged
rollout judges a canary on.

Signatures are required here (``trusted_keys``): over a network, the manifest
is whatever the server, or anyone between, says.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selection.atomic import write_bytes_atomic
from selection.errors import ConfigError, ShadowError
from selection.live.log import PredictionLog
from selection.runtime.channel import ChannelRuntime, RuntimeEvent
from selection.runtime.errors import BadInputError, NoModelError
from selection.runtime.model import LoadedModel
from selection.runtime.remote import (
    Cancelled,
    FetchError,
    FleetClient,
    clean_staging,
    encode_report,
    install,
)
from selection.runtime.shadows import ShadowScorer
from selection.signing import PublicKey, TrustedKeys

#: Seconds between two polls of the fleet server (a 304 each when nothing changed).
DEFAULT_REMOTE_POLL_S = 5.0
DEFAULT_BACKOFF_MAX_S = 60.0
#: In the cache folder: this device's prediction and error counts per model.
COUNTS_FILE = "counts.json"


def _read_counts(path: Path) -> dict[str, list[int]]:
    """The counts a previous run kept ({} if none or unreadable: they are a report)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: [int(v[0]), int(v[1])] for k, v in data.items()
            if isinstance(k, str) and isinstance(v, list) and len(v) == 2
            and all(isinstance(x, int) and x >= 0 for x in v)}


class RemoteChannelRuntime(ChannelRuntime):
    """Serves a channel fetched from ``url`` (``shadow fleet serve``), cached in ``cache_dir``.

    ``device_id`` identifies this device to the server (fleet view, canary
    assignment); ``token`` is the fleet's shared bearer token when the server
    requires one. Everything else is as :class:`ChannelRuntime` (``log``,
    ``shadows``, ``on_event``); ``reload`` does not apply: the sync thread
    swaps. Use as a context manager, or :meth:`start` and :meth:`stop`.
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike[str], channel: str = "production",
                 *, device_id: str,
                 trusted_keys: TrustedKeys | Iterable[str | os.PathLike[str] | PublicKey],
                 token: str | None = None, poll_s: float = DEFAULT_REMOTE_POLL_S,
                 backoff_max_s: float = DEFAULT_BACKOFF_MAX_S, timeout_s: float = 10.0,
                 first_model_timeout_s: float = 60.0, threads: int = 1,
                 on_event: Callable[[RuntimeEvent], None] | None = None,
                 log: PredictionLog | str | os.PathLike[str] | None = None,
                 shadows: ShadowScorer | Sequence[LoadedModel] | None = None) -> None:
        if trusted_keys is None:
            raise ConfigError("a runtime that follows a URL must be given trusted_keys (the "
                              "promoting home's keys/signing.pub): over a network the manifest "
                              "is whatever the server says; copy the public key to the device")
        if not (0 < poll_s <= 3600 and 0 < backoff_max_s <= 86400 and 0 < timeout_s <= 600):
            raise ConfigError(f"poll_s, backoff_max_s and timeout_s must be positive (poll_s <= "
                              f"3600, timeout_s <= 600); got {poll_s!r}, {backoff_max_s!r}, "
                              f"{timeout_s!r}; e.g. poll_s=5")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(Path(cache_dir), channel, poll_s=poll_s, reload=False, threads=threads,
                         on_event=on_event, trusted_keys=trusted_keys, log=log, shadows=shadows)
        self.client = FleetClient(url, channel, device_id, token=token, timeout_s=timeout_s)
        self.backoff_max_s = backoff_max_s
        self.first_model_timeout_s = first_model_timeout_s
        self._etag: str | None = None
        # Counts the server has taken, per model: a poll sends only the models whose counts
        # changed since (the server keeps the rest), so an idle device sends no report at all.
        self._reported: dict[str, tuple[int, int, int, int]] = {}
        self._failures = 0
        self._last_ok: datetime | None = None
        self._last_error: str | None = None
        self._sync_thread: threading.Thread | None = None
        self._sync_stop = threading.Event()
        self._lock = threading.Lock()
        # sha256 -> [predictions, errors]; kept in the cache (written after each report the
        # server took) so a restart does not start the counts the server compares again from 0.
        self._counts_file = Path(cache_dir) / COUNTS_FILE
        self._served: dict[str, list[int]] = _read_counts(self._counts_file)
        self._rng = random.Random(device_id)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> LoadedModel:
        """Serve the cached version (offline is fine), or wait for a first one; then keep in step."""
        clean_staging(self.channels_dir)
        if self._sync_thread is None:
            self._sync_stop.clear()  # a stop() before: this start downloads again
        if self._target() is None:
            deadline = time.monotonic() + self.first_model_timeout_s
            while self.sync_once() != "updated":
                if time.monotonic() >= deadline:
                    raise NoModelError(
                        f"device {self.client.device_id!r} has no cached model of channel "
                        f"{self.channel!r} and none could be fetched from {self.client.url} "
                        f"within {self.first_model_timeout_s:g} s ({self._last_error}); check "
                        "the URL, the token and that the channel was promoted")
                time.sleep(min(self._delay(), max(0.0, deadline - time.monotonic())))
        model = super().start()
        if self._sync_thread is None:
            self._sync_stop.clear()
            self._sync_thread = threading.Thread(target=self._sync_loop, daemon=True,
                                                 name=f"fleet-sync-{self.channel}")
            self._sync_thread.start()
        return model

    def stop(self) -> None:
        """Stop syncing, then as :meth:`ChannelRuntime.stop`.

        A download in progress ends at its next chunk and nothing is linked after
        this is called (``remote.install``'s ``cancel``), so the join below is short.
        """
        self._sync_stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=self.client.timeout_s + 5)
            self._sync_thread = None
        super().stop()

    # -- serving ------------------------------------------------------------------------

    def predict(self, payload: Any, request_id: str | None = None) -> dict[str, Any]:
        """As :meth:`ChannelRuntime.predict`, counted per model for the server's rollout evidence."""
        sha = self._model.sha256 if self._model is not None else "-"
        try:
            answer = super().predict(payload, request_id)
        except BadInputError:
            raise  # the caller's mistake, not the model's
        except Exception:
            self._count(sha, errors=1)
            raise
        self._count(str(answer.get("sha256", sha)))
        return answer

    def status(self) -> dict[str, Any]:
        """As :meth:`ChannelRuntime.status`, plus where it syncs from and how that goes."""
        return {**super().status(), "remote": {
            "url": self.client.url, "device_id": self.client.device_id, "etag": self._etag,
            "failures": self._failures, "last_error": self._last_error,
            "last_ok_at": self._last_ok.isoformat() if self._last_ok else None}}

    # -- syncing ------------------------------------------------------------------------

    def sync_once(self) -> str:
        """One poll: ``idle`` (nothing new), ``updated`` (a new version linked), ``failed``, or
        ``stopped`` (:meth:`stop` was called during the download; nothing linked)."""
        current = self._model.version if self._model is not None else None
        changed = self._changed_counts()
        try:
            offer = self.client.offer(self._etag, current,
                                      encode_report(changed) if changed else None)
            if changed:
                self._reported.update(changed)  # the server took them
                self._save_counts()
            if offer is None or offer.version == current:
                if offer is not None:
                    self._etag = offer.etag
                return self._ok("idle")
            install(self.client, self.channels_dir, offer,
                    trusted_keys=self.trusted_keys or {}, threads=self.threads,
                    cancel=self._sync_stop)
        except Cancelled:
            return "stopped"
        except (FetchError, ShadowError, OSError) as exc:
            self._failures += 1
            self._last_error = str(exc)
            self._emit(RuntimeEvent("refused", datetime.now(UTC), None,
                                    detail=f"sync failed ({self._failures} in a row): {exc}"))
            return "failed"
        if self._model is not None:
            self.check_now()  # the cache's link moved: load it and swap the one reference
        self._etag = offer.etag
        return self._ok("updated")

    def counts(self) -> dict[str, tuple[int, int, int, int]]:
        """This device's cumulative (predictions, errors, labelled, correct) per model sha256."""
        with self._lock:
            counts = {sha: (c[0], c[1], 0, 0) for sha, c in self._served.items()}
        for sha, n, correct in self._labelled():
            served = counts.get(sha, (0, 0, 0, 0))
            counts[sha] = (served[0], served[1], n, correct)
        return counts

    def _changed_counts(self) -> dict[str, tuple[int, int, int, int]]:
        """The counts the server has not seen yet (at most the 16 most recent models)."""
        changed = {sha: c for sha, c in self.counts().items() if self._reported.get(sha) != c}
        return dict(list(changed.items())[-16:])

    def _labelled(self) -> list[tuple[str, int, int]]:
        """(sha256, labelled, correct) of each champion in the log (the live board's counts)."""
        if self.log is None:
            return []
        from selection.live.board import live_board
        from selection.live.db import connect

        try:
            conn = connect(self.log.path, create=False, upgrade=False)
            try:
                rows = live_board(conn)
            finally:
                conn.close()
        except (ShadowError, OSError, Exception):  # noqa: BLE001 - evidence is best effort
            return []
        return [(r.sha256, r.n, round(r.accuracy * r.n)) for r in rows if r.role == "champion"]

    def _save_counts(self) -> None:
        with self._lock:
            data = json.dumps(self._served).encode()
        try:
            write_bytes_atomic(self._counts_file, data)
        except OSError:
            pass  # a full disk must not stop the syncing; the counts are a report, not state

    def _count(self, sha: str, errors: int = 0) -> None:
        with self._lock:
            entry = self._served.setdefault(sha, [0, 0])
            entry[0] += 1
            entry[1] += errors

    def _ok(self, outcome: str) -> str:
        self._failures = 0
        self._last_ok = datetime.now(UTC)
        return outcome

    def _delay(self) -> float:
        if not self._failures:
            return self.poll_s
        backoff = min(self.backoff_max_s, self.poll_s * 2 ** min(self._failures, 20))
        return backoff * (0.5 + self._rng.random() / 2)  # jitter: a fleet does not retry in step

    def _sync_loop(self) -> None:
        delay = self._delay()
        while not self._sync_stop.wait(delay):
            try:
                # After a swap, poll again at once: the server learns what this device runs now.
                delay = 0.0 if self.sync_once() == "updated" else self._delay()
            except Exception as exc:  # noqa: BLE001 - the sync thread must outlive any surprise
                self._failures += 1
                delay = self._delay()
                self._emit(RuntimeEvent("refused", datetime.now(UTC), None,
                                        detail=f"sync error: {exc!r}"))
