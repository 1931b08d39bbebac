"""``host-cpu``: the fp32 model on this machine's CPU through ONNX Runtime.

Nothing is emulated: accuracy is the exported model's own on the holdout, and
latency is measured here (one row per call, one thread, after warm-up), which
is what a single-threaded edge app scoring one request at a time would see on
this host. Registered in :mod:`shadow.devices.catalog`.
"""

from __future__ import annotations

import numpy as np

from selection.artifacts.content import sha256_bytes
from selection.records import HOST_DEVICE, DeviceResult
from shadow.devices.base import Device, DeviceRun
from shadow.devices.onnxruntime_session import measure_latency_ms, shared_session, shared_top1


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
        # Shared with the edge devices of the same candidate (their fp32 agreement).
        session = shared_session(onnx_bytes)
        predictions = shared_top1(onnx_bytes, features)
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
