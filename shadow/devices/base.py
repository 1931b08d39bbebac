"""The device interface: where a candidate's ONNX model is converted and measured.

A device takes the candidate's fp32 ONNX model and the holdout, converts the
model to the format it runs (fp32 as is for the host; quantized/compiled for an
edge accelerator), and reports accuracy, latency and size as a DeviceResult.
The bytes it actually runs come back too: they are what a promotion to that
device ships. Devices are registered by name; adding one is adding a module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from selection.records import DeviceResult
from shadow.errors import ConfigError


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


class Device:
    """Base of devices. Implementations must be picklable (they travel to Ray workers)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    numerics: ClassVar[str]
    description: ClassVar[str]

    def run(
        self, onnx_bytes: bytes, features: np.ndarray, labels: np.ndarray,
        calibration: np.ndarray,
    ) -> DeviceRun:  # pragma: no cover - interface
        """Convert, evaluate on the holdout (features, labels) and measure latency.

        ``calibration`` holds rows of the candidate's own training slice (never
        holdout rows), for devices that quantize.
        """
        raise NotImplementedError


DEVICES: dict[str, Device] = {}


def register(cls: type[Device]) -> type[Device]:
    DEVICES[cls.name] = cls()
    return cls


def all_devices() -> dict[str, Device]:
    """Code-registered devices plus every profile-defined one (built-in and $SHADOW_DEVICES)."""
    from shadow.devices.catalog import profile_devices  # lazy: profiles import this module

    return {**DEVICES, **profile_devices()}


def get_device(name: str, where: str = "devices") -> Device:
    """The device ``name``, or a ConfigError listing the known ones."""
    device = DEVICES.get(name)
    if device is None:
        known = all_devices()
        device = known.get(name)
        if device is None:
            raise ConfigError(
                f"{where}: unknown device {name!r}; known: "
                f"{', '.join([*sorted(DEVICES), *sorted(set(known) - set(DEVICES))])} "
                "(see `shadow devices`; add your own profile in a folder named by $SHADOW_DEVICES)."
            )
    return device
