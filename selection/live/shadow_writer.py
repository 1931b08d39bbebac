"""The shadows' half of the prediction log, written by a process of its own.

Why a process: logging what K shadows predicted is K rows per request against
the champion's one, and each row is Python work (labels to text, tuples, SQLite
bindings) done while holding the interpreter's lock. In the server's process
that work took the lock from the request threads however low the shadow
threads' OS priority was (a thread holding the lock cannot be preempted in
favour of another Python thread): with 4 shadows the champion's p99 rose by
about half on 2 cores, and about 1.13x with the shadows' logging switched off.
Here the server's worker only sends one compact message per scored batch (the
request ids, digests, the champion's labels and each shadow's class indices,
pickled once) through a pipe; this process turns them into rows and commits
them with its own :class:`~selection.live.log.PredictionLog` on the same file.

Its priority equals the champion log's writer thread (``DEFAULT_WRITER_NICE``):
each commit holds SQLite's write lock, and a writer starved of CPU while
holding it would stall the champion's commits (tried in an earlier design, with
a lower-priority thread in the server).

The two writers commit independently, so a shadow's rows can reach the file
before the champion's row for the same request: the log here holds those back
until the request is logged (``wait_for_request_s``), which keeps the rule that
a shadow's predictions are stored only under a request id logged for the same
inputs. A pipe full because this process is behind blocks the server's shadow
worker, never a request: its queue fills and further requests are skipped and
counted, as with any slow shadow. The process ends when the server closes the
pipe, or dies (end of file), after writing what it received.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import threading
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selection.errors import ShadowError
from selection.live.log import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_WRITER_NICE,
    ModelRef,
    PredictionLog,
)

#: How long a shadow's rows wait for their request's champion row before they are dropped
#: (counted ``orphaned``): far beyond the champion log's flush interval, yet bounded.
DEFAULT_WAIT_FOR_REQUEST_S = 30.0
#: How often an idle child copies its log's counters back.
PUBLISH_EVERY_S = 0.1
#: The counters copied back from the child after each message (``stats()``).
COUNTERS = ("logged", "dropped", "batches", "errors", "max_batch", "retries", "mismatched",
            "orphaned", "received")

# What one message carries: per request (id, n_rows, the champion's sha256, the champion's
# labels, the inputs' sha256); per shadow its ref and the class indices of every stacked row
# (int32, as bytes: the log stays standard-library only, like the rest of ``selection.live``).
Item = tuple[str, int, str, list[Any], str]


class ShadowLogProcess:
    """A child process that logs the shadows' predictions into the channel's log file."""

    def __init__(self, path: str | os.PathLike[str], *, channel: str | None = None,
                 flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
                 nice: int = DEFAULT_WRITER_NICE,
                 wait_for_request_s: float = DEFAULT_WAIT_FOR_REQUEST_S,
                 start_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        # spawn, not fork: the server has ONNX Runtime and HTTP threads a fork would copy mid-state.
        ctx = mp.get_context("spawn")
        self._counts = ctx.Array("q", len(COUNTERS), lock=False)
        receive, self._send = ctx.Pipe(duplex=False)
        ready = ctx.Event()
        self._process = ctx.Process(
            target=_child, name=f"shadow-log-{self.path.stem}", daemon=True,
            args=(receive, str(self.path), channel, flush_interval_s, nice, wait_for_request_s,
                  self._counts, ready))
        self._process.start()
        receive.close()  # the child's end: the child sees end of file once this process dies
        self._lock = threading.Lock()  # one message at a time on the pipe
        self._closed = False
        # A server that exits without calling close (an error on its way up) must still end the
        # child: multiprocessing's own exit hook would SIGTERM it, which the child ignores, then
        # wait for it forever. This hook runs first (atexit is last in, first out) and closes
        # the pipe, the child's cue to write what it has and exit.
        atexit.register(self.close)
        # Started before the first request, not during it: the child's start-up (an interpreter,
        # the log opened) would otherwise take CPU from the first requests.
        if not ready.wait(start_timeout_s):
            self.close(timeout=5)
            raise ShadowError(f"the shadows' log process for {self.path} did not start within "
                              f"{start_timeout_s:g} s (exit code {self._process.exitcode}); "
                              "check that the log file can be opened, or serve with --no-log")

    @property
    def alive(self) -> bool:
        """Whether the child still takes messages."""
        return not self._closed and self._process.is_alive()

    def log_batch(self, models: Sequence[ModelRef], items: Sequence[Item],
                  predicted: Sequence[bytes]) -> bool:
        """Send one scored batch: ``predicted[k]``, model k's class index per stacked row.

        Each entry is native int32s as bytes (numpy's ``astype(np.int32).tobytes()``).

        Blocks while the child is behind (the caller is a shadow worker, never a
        request). False when the child is gone: the caller logs in-process instead.
        """
        message = (list(models), list(items), list(predicted))
        with self._lock:
            if self._closed:
                return False
            try:
                self._send.send(message)
            except (OSError, ValueError):  # broken pipe: the child died
                return False
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Let the child write everything it received, then stop it (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._send.close()  # end of file: the child flushes and exits
        atexit.unregister(self.close)
        self._process.join(timeout)
        if self._process.is_alive():  # wedged past the timeout: do not hang the server's exit
            self._process.kill()
            self._process.join(5)

    def stats(self) -> dict[str, Any]:
        """The child's log counters (JSON-able)."""
        return {"process": self._process.pid, "alive": self.alive,
                **dict(zip(COUNTERS, list(self._counts), strict=True))}


def _child(receive: Any, path: str, channel: str | None, flush_interval_s: float, nice: int,
           wait_for_request_s: float, counts: Any, ready: Any) -> None:
    """The child's loop: messages to rows, until end of file; then write all and exit."""
    # Ctrl-C and systemd's stop signal the whole process group: the server then finishes
    # its requests, flushes the champion's log and closes the pipe, and that end of file,
    # not the signal, is this process's cue (it would otherwise die with rows unwritten).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)
    log = PredictionLog(path, channel=channel, flush_interval_s=flush_interval_s,
                        writer_nice=0, wait_for_request_s=wait_for_request_s)
    ready.set()
    received = 0
    try:
        while True:
            try:
                # Waking now and then even when idle: the counters then follow the writer's
                # commits, which happen after the messages that fed them.
                if receive.poll(PUBLISH_EVERY_S):
                    models, items, predicted = receive.recv()
                    received += len(items)
                    log_scored(log, models, items, [_ints(each) for each in predicted])
            except (EOFError, OSError):
                break
            _publish(counts, log.counts, received)
    finally:
        log.close()
        _publish(counts, log.counts, received)


def log_scored(log: PredictionLog, models: Sequence[ModelRef], items: Sequence[Item],
               predicted: Sequence[Sequence[int]]) -> None:
    """Log one scored batch: model k's class index per stacked row of ``items``' requests.

    The same rows whichever process writes them (the server's, or this module's child).
    """
    for model, indices in zip(models, predicted, strict=True):
        labels = _labels(model, indices)
        answers = []
        offset = 0
        for request_id, n_rows, champion_sha, champion_labels, digest in items:
            if model.sha256 != champion_sha:  # a shadow that became champion scores nothing
                answers.append((request_id, labels[offset:offset + n_rows], champion_labels,
                                digest))
            offset += n_rows
        log.log_shadow_many(model, answers)


def _labels(model: ModelRef, indices: Sequence[int]) -> list[object]:
    classes = model.classes
    return [classes[i] if classes and i < len(classes) else i for i in indices]


def _ints(data: bytes) -> list[int]:
    values = array("i")
    values.frombytes(data)
    return values.tolist()


def _publish(counts: Any, source: dict[str, int], received: int) -> None:
    for i, key in enumerate(COUNTERS):
        counts[i] = received if key == "received" else int(source.get(key, 0))
