"""Work several devices of one candidate share, done once per worker process.

A candidate runs on every device of its sweep in turn, in one worker: the host and
each edge profile score the same fp32 model on the same holdout, and edge profiles
with the same numerics quantize the same model with the same calibration rows. Those
are pure functions of bytes, so their results are kept here, keyed by the sha256 of
their inputs, for the few calls a candidate makes (a small LRU: a worker moves on to
the next candidate and the entries age out); a hit returns exactly what a miss would
compute. One entry is a measurement, not a function: the host latency of a converted
model, timed once and shared by the profiles that run the same bytes on this CPU (timing
it again per profile would only add noise, and the time).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
#: Entries kept: one candidate's fp32 session and predictions, and per numerics its quantized
#: model, session, predictions and host latency (two numerics in one sweep fit).
MAX_ENTRIES = 12

_lock = threading.Lock()
_entries: OrderedDict[Hashable, Any] = OrderedDict()
#: Hits and misses since start (sweep_scaling reports them).
stats = {"hits": 0, "misses": 0}


def digest(value: bytes | np.ndarray) -> str:
    """sha256 of model bytes or of an array's dtype, shape and contents."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        h.update(array.data)
        return h.hexdigest()
    return hashlib.sha256(value).hexdigest()


def once(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, or what it returned for ``key`` within the last few calls."""
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            stats["hits"] += 1
            return _entries[key]
    value = compute()
    with _lock:
        stats["misses"] += 1
        _entries[key] = value
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    """Forget every entry (tests, and a benchmark comparing with and without)."""
    with _lock:
        _entries.clear()
