"""A Ray of a test's own, found and stopped by pid (``ray stop`` would stop every cluster of this user).

A Ray started with ``RAY_TMPDIR``/``--temp-dir`` set to a folder of the test's own
(``shadow.sweep.cluster.private_ray_env``) is every live process that names that folder on its
command line or in its environment, and their descendants: workers and the dashboard's modules
rename themselves (setproctitle), which overwrites what ``/proc`` shows of their command line and
environment, so only their parents name the folder (``shadow.sweep.cluster.ray_processes``).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from contextlib import ExitStack
from pathlib import Path

from shadow.sweep.cluster import ray_processes

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback now (held together, so never the same twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def cluster_pids(ray_tmp: Path) -> list[int]:
    """Live processes of the cluster under ``ray_tmp`` (this one aside): see the module docstring."""
    return ray_processes(ray_tmp)


def stop_cluster(ray_tmp: Path, grace_s: float = 10.0) -> list[int]:
    """SIGTERM the cluster's processes, SIGKILL what outlives ``grace_s``; returns what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in cluster_pids(ray_tmp):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while cluster_pids(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
    return cluster_pids(ray_tmp)
