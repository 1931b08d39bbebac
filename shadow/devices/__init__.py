"""Devices by name: the ``Device`` contract (``base``), the code device ``host-cpu``, the emulated
edge devices defined by profiles (``edge``), and the catalog that names them all (``catalog``:
code devices are registered there; profiles in ``edge/profiles/*.toml`` and ``$SHADOW_DEVICES``
load on first use)."""

from shadow.devices.base import Device, DeviceRun
from shadow.devices.catalog import DEVICES, all_devices, get_device

__all__ = ["DEVICES", "Device", "DeviceRun", "all_devices", "get_device"]
