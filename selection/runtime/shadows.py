"""Shadow scoring: challengers score the champion's inputs off the request path.

A request thread hands its input batch to :meth:`ShadowScorer.submit`, which
only appends it to a bounded queue (a deque: no lock, no wake-up of another
thread); when the queue is full the request is skipped for the shadows and
counted (``skipped``): the champion's answer never waits for a shadow. Worker
threads wake every ``interval_s``, take what has gathered (up to
``max_batch_rows`` rows), stack it and run each shadow *once* on the stack,
then log every shadow's predicted labels under each request's id. Waking on a
clock rather than per request keeps the workers' share of the GIL and of
context switches small however fast requests come.

With a ``sink`` (:class:`~selection.live.shadow_writer.ShadowLogProcess`, what
``shadow serve`` uses), the workers send each scored batch to a process of its
own, which turns it into log rows: that per-row work, K rows per request, is
what cost the champion its tail latency when done in the server's process
(it holds the interpreter's lock whatever the thread's priority). Without one
(an app embedding ``ChannelRuntime``), the rows go to ``log`` from here.

The workers run at a lower CPU priority (``nice``, per thread on Linux), so on
a busy machine the scheduler gives the cores to the request threads first and
the shadows take what is left; ONNX Runtime runs on the calling thread
(``intra_op_num_threads=1``), so the priority covers the inference too.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from selection.errors import ConfigError
from selection.live.log import PredictionLog, lower_thread_priority
from selection.live.shadow_writer import ShadowLogProcess, log_scored
from selection.runtime.model import LoadedModel

DEFAULT_QUEUE_SIZE = 256
#: Most shadows one server scores (each costs one inference per request batch).
MAX_SHADOWS = 16
DEFAULT_MAX_BATCH_ROWS = 4096
#: Worker niceness added to the server's (0 = same; 19 = lowest): the request threads come first.
DEFAULT_NICE = 19
#: How often the workers look for queued requests.
DEFAULT_INTERVAL_S = 0.01

# Request id, inputs, the champion's sha256 and labels, the inputs' sha256.
_Item = tuple[str, np.ndarray, str, list[Any], str]


class ShadowScorer:
    """Up to K shadow models scoring the champion's requests in the background."""

    def __init__(self, models: Sequence[LoadedModel], log: PredictionLog | None = None, *,
                 queue_size: int = DEFAULT_QUEUE_SIZE, workers: int = 1,
                 max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS, nice: int = DEFAULT_NICE,
                 max_models: int | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 sink: ShadowLogProcess | None = None) -> None:
        if queue_size < 1 or workers < 1:
            raise ConfigError(f"shadow scoring needs queue_size >= 1 and workers >= 1; got "
                              f"{queue_size} and {workers}")
        self._models: tuple[LoadedModel, ...] = tuple(_unique(models))
        self.max_models = max_models if max_models is not None else len(self._models)
        self.log = log
        self.sink = sink
        self.max_batch_rows = max_batch_rows
        self.nice = nice
        self.queue_size = queue_size
        self.interval_s = interval_s
        self._queue: deque[_Item] = deque()
        self._take = threading.Lock()  # one worker drains at a time (keeps batches whole)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # log_fallback: batches whose rows the server wrote because the sink's process was gone.
        self.counts = {"submitted": 0, "skipped": 0, "scored": 0, "batches": 0, "errors": 0,
                       "log_fallback": 0}
        self._threads = [threading.Thread(target=self._work, name=f"shadow-{i}", daemon=True)
                         for i in range(workers)]
        self._started = False

    @property
    def models(self) -> tuple[LoadedModel, ...]:
        """The shadows scoring now."""
        return self._models

    def start(self) -> None:
        """Start the workers (once)."""
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued (within ``timeout``), then stop the workers."""
        if not self._started:
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._started = False
        if self.sink is not None:
            # The champion's rows first: the sink's rows wait for their requests' rows.
            if self.log is not None:
                self.log.flush()
            self.sink.close()

    def submit(self, request_id: str, batch: np.ndarray, champion: LoadedModel,
               champion_labels: list[Any], inputs_sha256: str | None = None) -> bool:
        """Queue a request for the shadows; False (skipped, counted) when the queue is full.

        ``champion_labels``: what the champion answered, logged beside each shadow's labels.
        ``inputs_sha256``: the digest of ``batch``'s bytes (computed here if not given): the log
        keeps a shadow's predictions only under a request id logged for these same inputs.
        """
        if not self._models:
            return False
        # len and append are each atomic; a race can overshoot the bound by a thread or two.
        if len(self._queue) >= self.queue_size or self._stop.is_set():
            with self._lock:
                self.counts["skipped"] += 1
            return False
        digest = inputs_sha256 or hashlib.sha256(batch.tobytes()).hexdigest()
        self._queue.append((request_id, batch, champion.sha256, champion_labels, digest))
        with self._lock:
            self.counts["submitted"] += 1
        return True

    def follow_swap(self, previous: LoadedModel | None, champion: LoadedModel) -> None:
        """After a promotion: the new champion stops shadowing; the old one takes its place."""
        models = [m for m in self._models if m.sha256 != champion.sha256]
        if previous is not None and len(models) < self.max_models:
            models.append(previous)
        self._models = tuple(_unique(models))  # one reference: workers read it once per batch

    def stats(self) -> dict[str, Any]:
        """Counters and the shadows' ids (JSON-able)."""
        return {**self.counts, "queued": len(self._queue),
                "models": [{"candidate_id": m.candidate_id, "sha256": m.sha256}
                           for m in self._models],
                "log_process": self.sink.stats() if self.sink is not None else None}

    # -- workers ------------------------------------------------------------------------

    def _work(self) -> None:
        lower_thread_priority(self.nice)
        while True:
            stopping = self._stop.wait(self.interval_s)
            while True:
                items = self._drain()
                if not items:
                    break
                self._score(items)
                if not stopping and len(self._queue) < self.max_batch_rows:
                    break  # back to sleep: the rest is scored in the next batch
            if stopping:
                return

    def _drain(self) -> list[_Item]:
        """What has gathered, up to ``max_batch_rows`` rows: one run per shadow."""
        items: list[_Item] = []
        rows = 0
        with self._take:
            while rows < self.max_batch_rows:
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
                items.append(item)
                rows += len(item[1])
        return items

    def _score(self, items: list[_Item]) -> None:
        models = self._models
        for width in {item[1].shape[1] for item in items}:
            group = [it for it in items if it[1].shape[1] == width]
            stacked = np.concatenate([item[1] for item in group])
            scored: list[tuple[LoadedModel, np.ndarray]] = []
            for model in models:
                if model.n_features != width:
                    with self._lock:
                        self.counts["errors"] += 1
                    continue
                try:
                    probabilities = model.run(stacked.astype(model.dtype, copy=False))
                except Exception:  # noqa: BLE001 - a failing shadow must not stop the others
                    with self._lock:
                        self.counts["errors"] += 1
                    continue
                scored.append((model, probabilities.argmax(axis=1)))
            if self.log is not None and scored:
                self._log(group, scored)
        with self._lock:
            self.counts["scored"] += len(items)
            self.counts["batches"] += 1

    def _log(self, group: list[_Item], scored: list[tuple[LoadedModel, np.ndarray]]) -> None:
        """One message to the sink's process; in-process rows if there is none (or it died)."""
        refs = [model.ref for model, _ in scored]
        items = [(rid, len(batch), champion_sha, champion_labels, digest)
                 for rid, batch, champion_sha, champion_labels, digest in group]
        sink = self.sink
        if sink is not None and sink.alive and sink.log_batch(
                refs, items, [each.astype(np.int32).tobytes() for _, each in scored]):
            return
        if sink is not None:  # its process died: the rows are written here (counted, on /metrics)
            with self._lock:
                self.counts["log_fallback"] += 1
        assert self.log is not None
        log_scored(self.log, refs, items, [each.tolist() for _, each in scored])


def _unique(models: Sequence[LoadedModel]) -> list[LoadedModel]:
    seen: dict[str, LoadedModel] = {}
    for model in models:
        seen.setdefault(model.sha256, model)
    return list(seen.values())

