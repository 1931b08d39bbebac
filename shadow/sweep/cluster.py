"""Connecting to Ray: a private local instance by default, or an existing cluster.

A local instance binds loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
makes Ray honour ``127.0.0.1``; without it Ray binds the first interface) and
skips the dashboard (about 1 s and 400 MB saved). If Ray is already initialized
in this process (a notebook, a test session, ``ray job submit``'s driver), it is
used as is and left running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shadow.errors import ClusterError

LOOPBACK = "127.0.0.1"


def init_local_ray(num_cpus: int | None = None) -> None:
    """Start a private Ray instance on loopback for this process."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(
        # "local" always starts a new instance; without it ray.init joins whatever
        # cluster /tmp/ray/ray_current_cluster names (someone else's, on a shared host).
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a sweep; shut down only if this call started it.

    ``address`` None means ``$RAY_ADDRESS`` if set, else a private local instance.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    # Under `ray job submit` the driver runs beside a cluster that RAY_ADDRESS names:
    # join it rather than start a private one.
    address = address or os.environ.get("RAY_ADDRESS") or None
    # ray.init replaces this process's SIGTERM handler (sys.exit) and ray.shutdown leaves
    # SIGTERM at the default (death): put the caller's back after each (`shadow watch`).
    sigterm = signal.getsignal(signal.SIGTERM)
    restore = sigterm is not None and threading.current_thread() is threading.main_thread()
    if address is None:
        init_local_ray(num_cpus)
    else:
        probe(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address!r}: {exc}. Check the address "
                "(auto, HOST:PORT or ray://HOST:10001), that the cluster runs, and that "
                "RAY_AUTH_MODE matches the cluster's."
            ) from None
    if restore:
        signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        ray.shutdown()
        if restore:
            signal.signal(signal.SIGTERM, sigterm)


def probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast if a HOST:PORT (or ray://HOST:PORT) address does not answer.

    ray.init retries an unreachable GCS for minutes; a user with a typo in
    --address deserves an answer in seconds. ``auto`` is left to Ray.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or "://" in target or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host or LOOPBACK, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address!r}: {exc.strerror or exc}. Check "
            "the address (the head's GCS port, 6379 by default, or ray://HOST:10001) and that "
            "the cluster runs (`ray status`)."
        ) from None


def cluster_cpus() -> int:
    """CPUs the connected cluster offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def private_ray_env(ray_tmp: str | os.PathLike[str],
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that starts a Ray of its own under ``ray_tmp``.

    Loopback only, no auth token (CLI clients of it need none), never ``$RAY_ADDRESS``'s
    cluster, and every Ray process it starts names ``ray_tmp`` on its command line, so
    :func:`ray_processes` finds exactly those (to stop only what one started, by pid).
    """
    env = {**(os.environ if base is None else base), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


def ray_processes(ray_tmp: str | os.PathLike[str]) -> list[int]:
    """Pids of the live processes of the Ray under ``ray_tmp`` (this one aside; Linux).

    Those that name the folder on their command line or as ``RAY_TMPDIR`` in their
    environment (``private_ray_env``), and all their descendants: Ray's workers, agents
    and dashboard modules rename themselves (setproctitle), which overwrites what
    ``/proc`` shows of their command line and environment, so often only their
    parents still name the folder. Zombies (already dead) are left out.
    """
    from pathlib import Path

    marker, env_marker = str(ray_tmp).encode(), f"RAY_TMPDIR={ray_tmp}".encode()
    parent: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if state == "Z":
                continue
            parent[pid] = int(ppid)
            if (marker in (entry / "cmdline").read_bytes()
                    or env_marker in (entry / "environ").read_bytes()):
                found.add(pid)
        except OSError:
            continue  # it ended while we looked, or is not ours to read
    while True:
        children = {pid for pid, ppid in parent.items() if ppid in found} - found
        if not children:
            break
        found |= children
    found.discard(os.getpid())
    return sorted(found)
