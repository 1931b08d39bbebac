"""Session-wide fixtures: one local Ray for the whole test run (it takes ~4 s to start)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Loopback only: without this Ray binds the machine's first interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A private 2-CPU Ray on 127.0.0.1, shared by every test that asks for it."""
    import ray

    from shadow.sweep.cluster import init_local_ray

    started = not ray.is_initialized()
    if started:
        init_local_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()
