"""Devices by name: the code devices (registered here) and those defined by profiles.

Code devices are registered in :data:`DEVICES`, in one place below. Profile
devices (the built-in ``edge/profiles/*.toml`` and those in ``$SHADOW_DEVICES``
folders) load lazily, not at import, so a malformed user profile surfaces as a
ConfigError where a command asks for devices, not as an import-time crash, and
so the CLI starts without parsing TOML it does not need. They are cached per
value of ``$SHADOW_DEVICES``.
"""

from __future__ import annotations

import os

from selection.registry import Registry
from shadow.devices.base import Device
from shadow.devices.edge.device import EdgeDevice
from shadow.devices.edge.profile import BUILTIN_DIR, ENV_VAR, DeviceProfile, load_profiles, profile_dirs
from shadow.devices.host_cpu import HostCpu
from shadow.errors import ConfigError

_FIX = "See `shadow devices`; add your own profile in a folder named by $SHADOW_DEVICES."

#: Devices defined in code (one shared instance each), registered here and only here.
DEVICES: Registry[Device] = Registry("device", fix=_FIX)
DEVICES.register(HostCpu())

#: $SHADOW_DEVICES value -> every device (code ones first, then profiles, each part sorted).
_cache: dict[str, Registry[Device]] = {}


def _all() -> Registry[Device]:
    key = os.environ.get(ENV_VAR, "")
    if key not in _cache:
        every: Registry[Device] = Registry("device", fix=_FIX)
        for name in sorted(DEVICES):
            every.register(DEVICES[name])
        for name, profile in sorted(load_profiles(profile_dirs()).items()):
            if profile.kind == "host":
                continue  # host profiles feed the cost model only
            if name in DEVICES:
                raise ConfigError(
                    f"device profile {profile.path}: name: {name!r} is a built-in device; "
                    "give the profile another name."
                )
            every.register(EdgeDevice(profile))
        _cache.clear()
        _cache[key] = every
    return _cache[key]


def profile_devices() -> dict[str, Device]:
    """Every profile-defined device by name (``host`` profiles feed the cost model only)."""
    return {name: device for name, device in _all().items() if name not in DEVICES}


def all_devices() -> dict[str, Device]:
    """Code-registered devices plus every profile-defined one (built-in and $SHADOW_DEVICES)."""
    return dict(_all().items())


def get_device(name: str, where: str = "devices") -> Device:
    """The device ``name``, or a ConfigError listing the known ones."""
    if name in DEVICES:
        # Code devices never need the profiles parsed (nor fail on a bad user profile).
        return DEVICES[name]
    return _all().get(name, where)


def builtin_profile(name: str) -> DeviceProfile:
    """A built-in profile by name (benchmarks and tests use the ``host-cpu`` one)."""
    profiles = load_profiles([BUILTIN_DIR])
    if name not in profiles:
        raise ConfigError(f"no built-in device profile {name!r}; known: {', '.join(sorted(profiles))}.")
    return profiles[name]
