"""Devices from profiles: the built-in ones and those in ``$SHADOW_DEVICES`` folders.

Loaded lazily (not at import) so a malformed user profile surfaces as a
ConfigError where a command asks for devices, not as an import-time crash, and
so the CLI starts without parsing TOML it does not need. The result is cached
per value of ``$SHADOW_DEVICES``.
"""

from __future__ import annotations

import os

from shadow.devices.base import DEVICES, Device
from shadow.devices.edge.device import EdgeDevice
from shadow.devices.edge.profile import ENV_VAR, BUILTIN_DIR, DeviceProfile, load_profiles, profile_dirs
from shadow.errors import ConfigError

_cache: dict[str, dict[str, Device]] = {}


def profile_devices() -> dict[str, Device]:
    """Every profile-defined device by name (``host`` profiles feed the cost model only)."""
    key = os.environ.get(ENV_VAR, "")
    if key not in _cache:
        devices: dict[str, Device] = {}
        for name, profile in load_profiles(profile_dirs()).items():
            if profile.kind == "host":
                continue
            if name in DEVICES:
                raise ConfigError(
                    f"device profile {profile.path}: name: {name!r} is a built-in device; "
                    "give the profile another name."
                )
            devices[name] = EdgeDevice(profile)
        _cache.clear()
        _cache[key] = devices
    return _cache[key]


def builtin_profile(name: str) -> DeviceProfile:
    """A built-in profile by name (benchmarks and tests use the ``host-cpu`` one)."""
    profiles = load_profiles([BUILTIN_DIR])
    if name not in profiles:
        raise ConfigError(f"no built-in device profile {name!r}; known: {', '.join(sorted(profiles))}.")
    return profiles[name]
