"""The device contract: where a candidate's ONNX model is converted and measured.

A device takes the candidate's fp32 ONNX model and the holdout, converts the
model to the format it runs (fp32 as is for the host; quantized/compiled for an
edge accelerator), and reports accuracy, latency and size as a DeviceResult.
The bytes it actually runs come back too: they are what a promotion to that
device ships. Devices are looked up by name in :mod:`shadow.devices.catalog`
(code devices registered there, profile devices loaded from TOML).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from selection.records import DeviceResult


@dataclass(frozen=True)
class DeviceRun:
    """A device's result, the model bytes it ran and its prediction for every holdout row.

    ``artifact`` is keyed by ``result.artifact_sha256``; ``predictions`` (int64
    class indices, holdout order) become an artifact the sweep driver links to
    the result, for paired comparisons between candidates.
    """

    result: DeviceResult
    artifact: bytes | None
    predictions: np.ndarray | None = None
    #: Further files the device made (a compiled context binary, ...), keyed by
    #: sha256; the result's ``extra`` says what each one is.
    extra_artifacts: dict[str, bytes] = field(default_factory=dict)


class Device(ABC):
    """The contract of a device.

    - ``name`` is what a sweep's ``devices = [...]`` lists; ``kind`` (host, npu,
      cpu), ``numerics`` (fp32, a8w8, ...) and ``description`` feed listings.
    - :meth:`run` is a pure function of its arguments: it reads no store, writes
      no file and keeps no state between calls, because it runs inside Ray
      workers, many at once, and its result travels back to the driver (the only
      writer). Implementations must therefore be picklable: plain data, no open
      sessions or handles kept on ``self``.
    - Accuracy is measured on the numerics the device really runs, on every
      holdout row, and ``predictions`` holds those rows' classes in holdout
      order (paired tests compare candidates row by row).
    - A model the device cannot convert raises
      :class:`~shadow.devices.errors.ConversionError`. Whatever :meth:`run`
      raises fails that device's row only; the candidate's other devices still
      run (``shadow.sweep.task``).
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    numerics: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def run(
        self, onnx_bytes: bytes, features: np.ndarray, labels: np.ndarray,
        calibration: np.ndarray,
    ) -> DeviceRun:
        """Convert, evaluate on the holdout (features, labels) and measure latency.

        ``calibration`` holds rows of the candidate's own training slice (never
        holdout rows), for devices that quantize.
        """
