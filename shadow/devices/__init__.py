"""Devices by name. Importing this package registers the built-in code devices (host-cpu);
devices defined by profiles (``profiles/*.toml`` and ``$SHADOW_DEVICES``) load on first use."""

from shadow.devices import host_cpu  # noqa: F401  (registers host-cpu)
from shadow.devices.base import DEVICES, Device, DeviceRun, all_devices, get_device

__all__ = ["DEVICES", "Device", "DeviceRun", "all_devices", "get_device"]
