"""Shadow scoring: challengers score the champion's inputs off the request path.

A request thread hands its input batch to :meth:`ShadowScorer.submit`, which
only puts it on a bounded queue (``put_nowait``); when the queue is full the
request is skipped for the shadows and counted (``skipped``): the champion's
answer never waits for a shadow. Worker threads take what has gathered (up to
``max_batch_rows`` rows), stack it and run each shadow *once* on the stack,
then log every shadow's predicted labels under each request's id.

The workers run at a lower CPU priority (``nice``, per thread on Linux), so on
a busy machine the scheduler gives the cores to the request threads first and
the shadows take what is left; ONNX Runtime runs on the calling thread
(``intra_op_num_threads=1``), so the priority covers the inference too.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from selection.errors import ConfigError
from selection.live.log import PredictionLog
from selection.runtime.model import LoadedModel

DEFAULT_QUEUE_SIZE = 256
DEFAULT_MAX_BATCH_ROWS = 4096
#: Worker niceness (0 = same as the server; 19 = lowest).
DEFAULT_NICE = 10

_Item = tuple[str, np.ndarray, str]  # request id, input batch, champion sha256


class ShadowScorer:
    """Up to K shadow models scoring the champion's requests in the background."""

    def __init__(self, models: Sequence[LoadedModel], log: PredictionLog | None = None, *,
                 queue_size: int = DEFAULT_QUEUE_SIZE, workers: int = 1,
                 max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS, nice: int = DEFAULT_NICE,
                 max_models: int | None = None) -> None:
        if queue_size < 1 or workers < 1:
            raise ConfigError(f"shadow scoring needs queue_size >= 1 and workers >= 1; got "
                              f"{queue_size} and {workers}")
        self._models: tuple[LoadedModel, ...] = tuple(_unique(models))
        self.max_models = max_models if max_models is not None else len(self._models)
        self.log = log
        self.max_batch_rows = max_batch_rows
        self.nice = nice
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.counts = {"submitted": 0, "skipped": 0, "scored": 0, "batches": 0, "errors": 0}
        self._threads = [threading.Thread(target=self._work, name=f"shadow-{i}", daemon=True)
                         for i in range(workers)]
        self._started = False

    @property
    def models(self) -> tuple[LoadedModel, ...]:
        """The shadows scoring now."""
        return self._models

    def start(self) -> None:
        """Start the workers (idempotent)."""
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued (within ``timeout``), then stop the workers."""
        if not self._started:
            return
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(timeout)
        self._started = False

    def submit(self, request_id: str, batch: np.ndarray, champion: LoadedModel) -> bool:
        """Queue a request for the shadows; False (skipped, counted) when the queue is full."""
        if not self._models:
            return False
        try:
            self._queue.put_nowait((request_id, batch, champion.sha256))
        except queue.Full:
            with self._lock:
                self.counts["skipped"] += 1
            return False
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
        return {**self.counts, "queued": self._queue.qsize(),
                "models": [{"candidate_id": m.candidate_id, "sha256": m.sha256}
                           for m in self._models]}

    # -- workers ------------------------------------------------------------------------

    def _work(self) -> None:
        _lower_priority(self.nice)
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            rows = len(item[1])
            stop = False
            while rows < self.max_batch_rows:  # take what has gathered: one run per shadow
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
                rows += len(more[1])
            self._score(items)
            if stop:
                return

    def _score(self, items: list[_Item]) -> None:
        models = self._models
        for width in {batch.shape[1] for _, batch, _ in items}:
            group = [it for it in items if it[1].shape[1] == width]
            stacked = np.concatenate([batch for _, batch, _ in group])
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
                labels = _labels(model, probabilities.argmax(axis=1))
                offset = 0
                for request_id, batch, champion_sha in group:
                    n = len(batch)
                    if model.sha256 != champion_sha and self.log is not None:
                        self.log.log_shadow(request_id, model.ref, labels[offset:offset + n])
                    offset += n
        with self._lock:
            self.counts["scored"] += len(items)
            self.counts["batches"] += 1


def _labels(model: LoadedModel, indices: np.ndarray) -> list[object]:
    classes = model.classes
    return [classes[i] if classes and i < len(classes) else i for i in indices.tolist()]


def _unique(models: Sequence[LoadedModel]) -> list[LoadedModel]:
    seen: dict[str, LoadedModel] = {}
    for model in models:
        seen.setdefault(model.sha256, model)
    return list(seen.values())


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: niceness is per thread); elsewhere a no-op."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass
