"""Devices by name. Importing this package registers the built-in ones."""

from shadow.devices import host_cpu  # noqa: F401  (registers host-cpu)
from shadow.devices.base import DEVICES, Device, DeviceRun, get_device

__all__ = ["DEVICES", "Device", "DeviceRun", "get_device"]
