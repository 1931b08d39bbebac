"""``host-cpu``: the fp32 model on this machine's CPU through ONNX Runtime.

Nothing is emulated: accuracy is the exported model's own on the holdout, and
latency is measured here (one row per call, one thread, after warm-up), which
is what a single-threaded edge app scoring one request at a time would see on
this host.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from selection.artifacts.content import sha256_bytes
from selection.records import HOST_DEVICE, DeviceResult
from shadow.devices.base import Device, DeviceRun, register
from shadow.models.io_names import INPUT_NAME, OUTPUT_NAME

WARMUP_RUNS = 20
TIMED_RUNS = 200
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


@register
class HostCpu(Device):
    """fp32 ONNX on this host's CPU (ONNX Runtime CPU execution provider)."""

    name = HOST_DEVICE
    kind = "host"
    numerics = "fp32"
    description = "this machine's CPU, ONNX Runtime CPU EP, fp32, 1 thread, measured latency"

    def run(
        self, onnx_bytes: bytes, features: np.ndarray, labels: np.ndarray,
        calibration: np.ndarray,
    ) -> DeviceRun:
        del calibration  # fp32 needs no calibration
        session = cpu_session(onnx_bytes)
        predictions = predict_proba(session, features).argmax(axis=1).astype(np.int64)
        accuracy = float(np.mean(predictions == labels))
        p50, p99 = measure_latency_ms(session, features[-1])
        result = DeviceResult(
            device=self.name,
            status="ok",
            accuracy=accuracy,
            latency_ms=p50,
            host_latency_p50_ms=p50,
            host_latency_p99_ms=p99,
            size_bytes=len(onnx_bytes),
            artifact_sha256=sha256_bytes(onnx_bytes),
            emulator="none",
            extra={"holdout_rows": int(len(labels)), "numerics": self.numerics},
        )
        return DeviceRun(result=result, artifact=onnx_bytes, predictions=predictions)
