"""Session-wide fixtures: one local Ray for the whole test run (it takes ~4 s to start)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

# Loopback only: without this Ray binds the machine's first interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A real two-node Ray cluster on 127.0.0.1 (1 CPU each), shared by the whole run.

    Two nodes rather than one: every sweep test then also exercises scheduling
    across nodes, and the cluster test can check that candidates ran on both.
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        yield
        return
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(autouse=True)
def _tracking_uri_restored() -> Iterator[None]:
    """``$MLFLOW_TRACKING_URI`` as it was before each test (MLflow's own calls set it).

    A test that points MLflow at its server must not leave the next test (a sweep, a
    promotion) tracking into a server that is gone.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
