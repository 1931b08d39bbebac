"""The user guide's Ray Jobs recipe, automated: a real head node, a real ``ray job submit``.

A head node of this test's own is started with ``ray start --head`` on loopback (the settings of
ENVIRONMENT.md's Ray section: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``RAY_AUTH_MODE=disabled`` in
every server's and client's environment), on free ports and under a short temp folder of its own,
so it never meets the test session's Ray (``tests/conftest.py``) or another user's. The recipe
(``ray job submit --address http://127.0.0.1:PORT --working-dir . --runtime-env-json ... --
python -m shadow sweep run ... --store URL --home DIR``) is run from a user's project folder that
holds only the sweep file (shadow-sweep is installed, as the guide asks of every node). The job's
driver must join the head (its candidates carry the head's node id) and the results must be in
the store and home named on the command line, outside the job's working folder.

``ray stop`` would stop every cluster of this user on the machine, so the cluster is stopped by
pid (``tests/shadow/sweep/own_ray.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from selection.store import Store
from shadow.sweep.cluster import LOOPBACK, private_ray_env
from tests.shadow.sweep.own_ray import free_ports, stop_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SWEEP = """\
[sweep]
name = "ray-job"
dataset = "noaa-weather"
seed = 3

[holdout]
rows = 365

[[slices]]
strategy = "recent"
rows = 730

[model]
family = "mlp"

[model.params]
width = [4, 8]
epochs = 2
"""

#: The excludes of the user guide's recipe (keep the upload small when run from a clone).
EXCLUDES = {"excludes": [".venv", ".shadow", ".git"]}


@dataclass(frozen=True)
class Head:
    dashboard: str  # http://127.0.0.1:PORT, where `ray job submit` goes
    env: dict[str, str]  # the servers' and the clients' environment
    ray: str  # the `ray` command

    def node_ids(self) -> list[tuple[str, bool]]:
        """(node id, is head) of the cluster's alive nodes, from the dashboard's state API."""
        with urllib.request.urlopen(f"{self.dashboard}/api/v0/nodes", timeout=30) as answer:
            nodes = json.load(answer)["data"]["result"]["result"]
        return [(n["node_id"], bool(n["is_head_node"])) for n in nodes if n["state"] == "ALIVE"]


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)  # in CI the recipe must really be tested, never skipped
    pytest.skip(message)


@pytest.fixture
def head() -> Iterator[Head]:
    """A one-node Ray cluster of this test's own, on loopback; stopped by pid afterwards."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.is_file():
        _missing(f"the `ray` command is not installed beside {sys.executable}; "
                 "`pip install -c constraints.txt -e '.[all,test]'` installs ray[default]")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rj-", dir="/tmp"))  # sockets need short paths
    env = private_ray_env(ray_tmp, {k: v for k, v in os.environ.items()
                                    if k not in ("SHADOW_STORE", "SHADOW_HOME")})
    # The job's entrypoint runs `python` from the head's PATH: this venv's, where shadow is.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    gcs, dashboard, agent_http, agent_grpc, client, node_manager, objects, metrics, runtime_env = \
        free_ports(9)
    command = [
        str(ray), "start", "--head", f"--port={gcs}", f"--node-ip-address={LOOPBACK}",
        f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard}",
        # Every port this head listens on, chosen free: the defaults (52365, 10001, ...)
        # may belong to another user's cluster on this machine.
        f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--ray-client-server-port={client}", f"--node-manager-port={node_manager}",
        f"--object-manager-port={objects}", f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats",
        f"--temp-dir={ray_tmp}",
    ]
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
        yield Head(f"http://{LOOPBACK}:{dashboard}", env, str(ray))
    finally:
        left = stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert left == [], f"processes of the test's Ray cluster outlived the stop: {left}"


def test_ray_job_submit_recipe_runs_the_sweep_on_the_head_and_stores_outside_the_job(
    tmp_path: Path, head: Head,
) -> None:
    project = tmp_path / "project"  # the job's working dir: what `--working-dir .` uploads
    project.mkdir()
    (project / "sweep.toml").write_text(SWEEP)
    home = tmp_path / "shared" / "home"  # outside the working dir, so it outlives the job
    store_url = f"sqlite:///{tmp_path / 'shared' / 'team.db'}"  # --store beside --home, not in it
    (tmp_path / "shared").mkdir()
    nodes = head.node_ids()
    assert len(nodes) == 1 and nodes[0][1], nodes
    head_id = nodes[0][0]

    submitted = subprocess.run(
        [head.ray, "job", "submit", "--address", head.dashboard, "--working-dir", ".",
         "--runtime-env-json", json.dumps(EXCLUDES), "--",
         "python", "-m", "shadow", "sweep", "run", "sweep.toml",
         "--store", store_url, "--home", str(home)],
        cwd=project, env=head.env, capture_output=True, text=True, timeout=300)
    log = f"{submitted.stdout[-4000:]}\n{submitted.stderr[-4000:]}"
    assert submitted.returncode == 0, log
    assert "succeeded" in log, log

    with Store.open(home, url=store_url, create=False) as store:
        sweeps = store.list_sweeps()
        assert [s.name for s in sweeps] == ["ray-job"], log
        records = store.list_candidates(sweeps[0].sweep_id)
        assert sorted(r.status for r in records) == ["ok", "ok"], log
        # The driver joined the job's cluster (no private Ray of its own): every candidate ran
        # on the head, the only node.
        assert {r.lineage["worker"]["node_id"] for r in records} == {head_id}
        for record in records:  # the models are in the given home, outside the working dir
            assert record.onnx_sha256 is not None and store.artifacts.exists(record.onnx_sha256)
    assert not (home / "shadow.db").exists()  # the metadata went to --store, not the home
    assert sorted(p.name for p in project.iterdir()) == ["sweep.toml"]  # nothing left in the project
