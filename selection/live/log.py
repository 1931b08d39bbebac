"""``PredictionLog``: durable, batched logging of every model's predictions, off the request path.

A request thread only appends a tuple to a list under a lock (about a
microsecond); one writer thread per log commits what has gathered as one
SQLite transaction (WAL, ``synchronous=FULL``: fsync'd) when ``batch_size``
records are waiting or ``flush_interval_s`` has passed, whichever comes
first. So:

- :meth:`close` (``shadow serve`` calls it on SIGTERM or Ctrl-C, after the
  server stopped taking requests) writes everything accepted: nothing is lost;
- another writer holding the file's lock past the busy timeout (``shadow
  feedback``, a device log's merge: they write in bounded chunks) delays a
  batch, never drops it: it goes back in front and is retried with backoff
  (``retries``), within the same ``max_pending`` bound;
- a SIGKILL or power cut loses at most what was accepted since the last commit
  began: the batch being committed plus the one gathering (at a steady rate,
  about two flush intervals of records; ``counts["max_batch"]`` is the largest
  batch so far), and never more than ``max_pending``
  (:data:`DEFAULT_MAX_PENDING`). Past that bound new
  records are dropped and counted (``dropped``) rather than letting memory grow
  or delaying the champion's answer.

Feedback goes through the same writer, after every prediction accepted before
it, so a label sent right after its answer finds the request it names.

A log that writes only shadows' rows while another writer logs the champion's
(the shadows' own process, ``selection.live.shadow_writer``) passes
``wait_for_request_s``: a shadow's rows whose request is not logged yet are
held back and tried again with each commit, and dropped (``orphaned``) once
older than that, so they are never stored under an id logged for other inputs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selection.live.db import DEFAULT_BUSY_TIMEOUT_S, LogBusyError, connect, is_busy
from selection.live.feedback import Feedback, FeedbackResult, apply_feedback

DEFAULT_BATCH_SIZE = 512
DEFAULT_FLUSH_INTERVAL_S = 0.05
DEFAULT_MAX_PENDING = 100_000
#: The writer's niceness above the server's: request threads come first, yet it keeps up.
DEFAULT_WRITER_NICE = 5
#: Backoff while another writer holds the file's lock: doubling from FIRST to MAX seconds.
FIRST_RETRY_S = 0.05
MAX_RETRY_S = 1.0

CHAMPION = 0  # predictions.role (selection.live.db.ROLES)
SHADOW = 1


@dataclass(frozen=True)
class ModelRef:
    """Which model answered: its candidate id, the sha256 of the bytes served, its classes."""

    candidate_id: str
    sha256: str
    classes: tuple[str, ...] | None = None


class _Waiter:
    """A flush or feedback job the writer finishes and the caller waits for."""

    def __init__(self, items: Sequence[Feedback] | None = None) -> None:
        self.items = items
        self.done = threading.Event()
        self.result: FeedbackResult | None = None
        self.error: BaseException | None = None


class PredictionLog:
    """The channel's prediction log, written by one background thread (thread-safe to call).

    Use as a context manager or call :meth:`close`; records accepted before
    ``close`` are all written. Several logs (in one process or many) may write
    one file (WAL, busy timeout), but each commit holds SQLite's write lock:
    give every writer of a busy file the same priority (``writer_nice``), or a
    starved low-priority writer holding the lock stalls the others.
    """

    def __init__(self, path: str | os.PathLike[str], *, channel: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 writer_nice: int = DEFAULT_WRITER_NICE,
                 busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                 wait_for_request_s: float = 0.0) -> None:
        self.path = Path(path)
        self.wait_for_request_s = wait_for_request_s
        self.busy_timeout_s = busy_timeout_s
        self.writer_nice = writer_nice
        self.channel = channel
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        # Fails here, not in the thread.
        self._conn = connect(self.path, channel=channel, busy_timeout_s=busy_timeout_s)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[Any] = []
        self._keys: dict[str, int] = {}  # sha256 -> models.model_key
        # Shadow records waiting for their request's row (wait_for_request_s), with when each
        # was first tried; only the writer thread touches it.
        self._held: list[tuple[float, tuple[Any, ...]]] = []
        self._closed = False
        # max_batch: the most records one commit wrote; a SIGKILL loses at most the batch being
        # committed plus the one gathering (each about that size at a steady rate).
        # retries: batches put back because another writer held the lock past the busy timeout;
        # mismatched: records left out because their request id was logged for other inputs;
        # orphaned: shadow records whose request was never logged within wait_for_request_s.
        self.counts = {"logged": 0, "dropped": 0, "batches": 0, "errors": 0, "max_batch": 0,
                       "retries": 0, "mismatched": 0, "orphaned": 0}
        self._thread = threading.Thread(target=self._run, name=f"prediction-log-{self.path.stem}",
                                        daemon=True)
        self._thread.start()

    # -- what request threads call ------------------------------------------------------

    def log_champion(self, request_id: str, model: ModelRef, predicted: Sequence[object],
                     inputs_sha256: str, received_at: float | None = None) -> bool:
        """Record the champion's answer to a request; False if the log is full (dropped)."""
        return self._append(("c", request_id, model, [str(p) for p in predicted], inputs_sha256,
                             time.time() if received_at is None else received_at))

    def log_shadow(self, request_id: str, model: ModelRef, predicted: Sequence[object],
                   champion: Sequence[object], inputs_sha256: str | None = None) -> bool:
        """Record a shadow's predictions for a request (``champion``: what the champion said).

        ``inputs_sha256``: the digest of the inputs the shadow scored; given, the
        predictions are kept only if the request's row carries the same digest.
        """
        return self._append(("s", request_id, model, [str(p) for p in predicted],
                             [str(p) for p in champion], inputs_sha256))

    def log_shadow_many(self, model: ModelRef,
                        answers: Sequence[tuple[str, Sequence[object], Sequence[object],
                                                str | None]]) -> int:
        """Record one shadow's predictions for many requests at once; returns how many fit.

        ``answers``: (request id, the shadow's labels, the champion's labels, the
        inputs' sha256 or None) per request.
        """
        records = [("s", rid, model, [str(p) for p in predicted], [str(p) for p in champion],
                    digest) for rid, predicted, champion, digest in answers]
        with self._lock:
            room = 0 if self._closed else max(0, self.max_pending - len(self._pending))
            self._pending.extend(records[:room])
            self.counts["dropped"] += len(records) - min(room, len(records))
            full = len(self._pending) >= self.batch_size
        if full:
            self._wake.set()
        return min(room, len(records))

    def add_feedback(self, items: Sequence[Feedback], timeout: float = 30.0) -> FeedbackResult:
        """Apply labels (all or none) after every prediction accepted so far; raises their error."""
        job = _Waiter(items)
        self._submit(job)
        if not job.done.wait(timeout):
            raise LogBusyError(f"the prediction log {self.path} did not answer within "
                               f"{timeout:g} s (another writer holds it); retry shortly")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything accepted so far is committed; False on timeout."""
        job = _Waiter()
        self._submit(job)
        return job.done.wait(timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Write everything accepted, stop the writer and close the file (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self._conn.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (records are then refused)."""
        return self._closed

    @property
    def pending(self) -> int:
        """Records accepted and not yet committed."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """Counters (JSON-able) for ``GET /model`` and metrics."""
        return {"path": str(self.path), "pending": self.pending, **self.counts,
                "batch_size": self.batch_size, "flush_interval_ms": self.flush_interval_s * 1000}

    # -- the writer -----------------------------------------------------------------------

    def _append(self, record: tuple[Any, ...]) -> bool:
        with self._lock:
            if self._closed or len(self._pending) >= self.max_pending:
                self.counts["dropped"] += 1
                return False
            self._pending.append(record)
            full = len(self._pending) >= self.batch_size
        if full:
            self._wake.set()
        return True

    def _submit(self, job: _Waiter) -> None:
        with self._lock:
            if self._closed:
                job.error = RuntimeError("the prediction log is closed")
                job.done.set()
                return
            self._pending.append(job)
        self._wake.set()

    def _run(self) -> None:
        lower_thread_priority(self.writer_nice)
        retry_s = 0.0  # > 0 while another writer holds the lock: back off, then try again
        while True:
            if retry_s:
                time.sleep(retry_s)  # a wake-up (a full batch) must not cut the backoff short
            elif not self._closed:  # closing: no more waiting, what is left is written now
                self._wake.wait(self.flush_interval_s)
            with self._lock:
                self._wake.clear()
                batch, self._pending = self._pending, []
                closing = self._closed
            if closing and not batch and self._held:
                with self._lock:
                    more = bool(self._pending)
                if not more:  # the last try for rows held back for their request
                    self._write([])
                    self.counts["orphaned"] += len(self._held)
                    self._held = []
                    continue
            if batch or self._held:
                if self._write(batch):
                    retry_s = 0.0
                else:
                    retry_s = min(MAX_RETRY_S, max(FIRST_RETRY_S, retry_s * 2))
                    self._requeue([r for r in batch if not self._refuse_busy(r)])
                    continue
            if closing:
                with self._lock:
                    if not self._pending and not self._held:
                        return

    def _requeue(self, batch: list[Any]) -> None:
        """Put a batch the lock refused back in front, keeping at most ``max_pending`` records."""
        with self._lock:
            queue = batch + self._pending
            excess = sum(isinstance(r, tuple) for r in queue) - self.max_pending
            if excess > 0:  # the newest records go, as when appending to a full log
                kept: list[Any] = []
                for item in reversed(queue):
                    if excess > 0 and isinstance(item, tuple):
                        excess -= 1
                        self.counts["dropped"] += 1
                    else:
                        kept.append(item)
                queue = kept[::-1]
            self._pending = queue
            self.counts["retries"] += 1

    def _refuse_busy(self, item: Any) -> bool:
        """Answer a feedback job "busy" at once (its caller gets a 503); True if it was one."""
        if not isinstance(item, _Waiter) or item.items is None:
            return False  # a record or a flush: retried
        item.error = self._busy_error()
        item.done.set()
        return True

    def _busy_error(self) -> LogBusyError:
        return LogBusyError(f"the prediction log {self.path} is busy (another writer held it "
                            f"over {self.busy_timeout_s:g} s); nothing was stored; retry shortly")

    def _write(self, batch: list[Any]) -> bool:
        """Commit a batch, then run its jobs; False (nothing done) if the file stayed locked."""
        held, self._held = self._held, []
        since = {id(r): t for t, r in held}
        records = [r for _, r in held] + [r for r in batch if isinstance(r, tuple)]
        jobs = [r for r in batch if isinstance(r, _Waiter)]
        if records:
            try:
                waiting = self._commit(records)
                written = len(records) - len(waiting)
                self.counts["logged"] += written
                self.counts["batches"] += 1
                self.counts["max_batch"] = max(self.counts["max_batch"], written)
                now = time.monotonic()
                for record in waiting:
                    first = since.get(id(record), now)
                    if now - first > self.wait_for_request_s:
                        self.counts["orphaned"] += 1
                    else:
                        self._held.append((first, record))
                excess = len(self._held) - self.max_pending  # bounded like the pending queue
                if excess > 0:  # the oldest go first: they are the likeliest never to match
                    self.counts["orphaned"] += excess
                    self._held = self._held[excess:]
            except sqlite3.Error as exc:
                self._held = held  # tried again with the batch
                if is_busy(exc):
                    return False  # another writer (shadow feedback, a merge): retried
                # Disk full or a broken file: count it; the server keeps answering.
                self.counts["errors"] += 1
        for job in jobs:  # after the predictions queued before them are in
            if job.items is not None:
                try:
                    job.result = apply_feedback(self._conn, job.items)
                except sqlite3.Error as exc:
                    job.error = self._busy_error() if is_busy(exc) else exc
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    job.error = exc
            job.done.set()
        return True

    def _commit(self, records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Write the records in one transaction; returns the shadow records held back.

        Held back (only with ``wait_for_request_s``): shadow records whose request
        has no row yet (its champion answer is another writer's, not committed yet).
        """
        conn = self._conn
        predictions: list[tuple[Any, ...]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            keys = self._model_keys({r[2].sha256: r[2] for r in records})
            # A reused request id keeps its first answer (the one its labels will describe).
            conn.executemany("INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?)",
                             [(r[1], r[5], len(r[3]), r[4], r[2].sha256) for r in records
                              if r[0] == "c"])
            records, waiting = self._same_inputs(records)
            for record in records:
                kind, request_id, model, predicted = record[:4]
                if kind == "c":
                    role, champion = CHAMPION, predicted
                else:
                    role, champion = SHADOW, record[4]
                key = keys[model.sha256]
                predictions.extend((request_id, i, key, role, p, c) for i, (p, c)
                                   in enumerate(zip(predicted, champion, strict=False)))
            # A shadow may finish after its request's label came back: take it along.
            conn.executemany("INSERT OR IGNORE INTO predictions VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                             "(SELECT label FROM labels WHERE request_id = ?1 AND row = ?2))",
                             predictions)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # Only now: a key read inside a transaction that rolled back may be given to another model.
        self._keys.update(keys)
        return waiting

    def _same_inputs(self, records: list[tuple[Any, ...]]
                     ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The records whose inputs are the ones their request id was first logged with.

        A client that reuses an ``X-Request-Id`` for other inputs must not get
        predictions on those inputs paired with the first request's label:
        they are left out and counted (``mismatched``). Second: the shadow
        records whose request is not logged yet, when this log waits for them
        (``wait_for_request_s``); otherwise that list is empty.
        """
        waits = self.wait_for_request_s > 0
        claimed = {r[1] for r in records if _digest(r) is not None or (waits and r[0] == "s")}
        stored: dict[str, str] = {}
        ids = sorted(claimed)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            stored.update(self._conn.execute(
                "SELECT request_id, inputs_sha256 FROM requests WHERE request_id IN "
                f"({', '.join('?' * len(part))})", part).fetchall())
        waiting: list[tuple[Any, ...]] = []
        if waits:
            waiting = [r for r in records if r[0] == "s" and r[1] not in stored]
            records = [r for r in records if r[0] != "s" or r[1] in stored]
        kept = [r for r in records if stored.get(r[1], _digest(r)) == _digest(r)
                or _digest(r) is None]
        self.counts["mismatched"] += len(records) - len(kept)
        return kept, waiting

    def _model_keys(self, models: dict[str, ModelRef]) -> dict[str, int]:
        """Each model's key (added to ``models`` first if new), inside the open transaction.

        The cache is not touched here: the caller adds these keys after COMMIT.
        """
        conn = self._conn
        keys = {}
        for sha, model in models.items():
            if sha not in self._keys:
                conn.execute("INSERT OR IGNORE INTO models (sha256, candidate_id, classes) "
                             "VALUES (?, ?, ?)", (sha, model.candidate_id, None if model.classes
                                                  is None else json.dumps(model.classes)))
                (key,) = conn.execute("SELECT model_key FROM models WHERE sha256 = ?",
                                      (sha,)).fetchone()
                keys[sha] = int(key)
            else:
                keys[sha] = self._keys[sha]
        return keys


def _digest(record: tuple[Any, ...]) -> str | None:
    """The inputs' sha256 a record claims (a champion's always; a shadow's if it was given)."""
    return str(record[4]) if record[0] == "c" else record[5]


def lower_thread_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: niceness is per thread); elsewhere a no-op."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass
