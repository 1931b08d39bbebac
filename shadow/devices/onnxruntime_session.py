"""ONNX Runtime on the host CPU: the session, batched prediction and single-row latency.

Shared by every device (``host-cpu`` runs the fp32 model this way; edge devices score
their converted model this way), so it is its own module rather than one device
borrowing another's helpers.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from selection.signature import INPUT_NAME, OUTPUT_NAME

#: Untimed runs before timing (first runs pay allocation and cache misses).
WARMUP_RUNS = 20
#: Timed single-row runs behind the p50/p99.
TIMED_RUNS = 200
#: Rows per call when scoring a whole holdout.
EVAL_BATCH = 4096


def cpu_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """A deterministic single-threaded CPU session (no spinning, sequential)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn the core another Ray task needs and skew timings.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def predict_proba(session: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """Class probabilities for every row, in batches."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    parts = [
        session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + EVAL_BATCH]})[0]
        for i in range(0, len(x), EVAL_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def measure_latency_ms(session: ort.InferenceSession, row: np.ndarray) -> tuple[float, float]:
    """p50 and p99 wall time of one single-row inference, in milliseconds."""
    feed = {INPUT_NAME: np.ascontiguousarray(row.reshape(1, -1), dtype=np.float32)}
    for _ in range(WARMUP_RUNS):
        session.run([OUTPUT_NAME], feed)
    times = np.empty(TIMED_RUNS)
    for i in range(TIMED_RUNS):
        start = time.perf_counter_ns()
        session.run([OUTPUT_NAME], feed)
        times[i] = time.perf_counter_ns() - start
    p50, p99 = np.percentile(times, [50, 99]) / 1e6
    return float(p50), float(p99)


def shared_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """:func:`cpu_session`, made once per model per worker (devices of one candidate share it)."""
    from shadow.devices import memo

    return memo.once(("session", memo.digest(onnx_bytes)), lambda: cpu_session(onnx_bytes))


def shared_top1(onnx_bytes: bytes, features: np.ndarray) -> np.ndarray:
    """Top-1 class (int64, read-only) of every row, computed once per model and rows per worker."""
    from shadow.devices import memo

    def compute() -> np.ndarray:
        top1 = predict_proba(shared_session(onnx_bytes), features).argmax(axis=1).astype(np.int64)
        top1.flags.writeable = False
        return top1

    return memo.once(("top1", memo.digest(onnx_bytes), memo.digest(features)), compute)


def shared_latency_ms(onnx_bytes: bytes, row: np.ndarray) -> tuple[float, float]:
    """:func:`measure_latency_ms` of a model on this host, measured once per model and row per worker.

    Edge profiles with the same numerics run the same converted model on the same host CPU:
    timing it again per profile would cost 220 runs each and only add noise between them.
    """
    from shadow.devices import memo

    return memo.once(("latency", memo.digest(onnx_bytes), memo.digest(row)),
                     lambda: measure_latency_ms(shared_session(onnx_bytes), row))
