"""The loop live, end to end, as a user runs it: every piece a real process.

- a real ``shadow watch CONFIG`` (continuous mode) with its own private local Ray;
- another process per batch, ``shadow data append``, adding NOAA's next year to a dataset that
  starts as three years of NOAA's history (``shadow.data.history``);
- a real ``shadow serve`` on 127.0.0.1 with a client thread sending ``POST /predict`` all along.

Each appended year fires ``new_rows``, a sweep runs on Ray, the no-regression gate passes and the
controller promotes; the server hot-swaps to the new champion while the client keeps asking, and
no request fails. SIGTERM then stops the controller cleanly (exit 0) and its Ray is gone.

The controller's Ray is private: ``RAY_ADDRESS`` is removed from its environment (with it set,
the sweep would join that cluster instead of starting ``init_local_ray``'s own, which always passes
``address="local"`` and so never attaches to a stranger's ``ray start``), and ``RAY_TMPDIR`` is a
folder of this test's own, so every Ray process it starts names that folder on its command line:
that is how the test finds (by pid) anything left over.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shadow.data.catalog import find_manifest
from shadow.data.history import full_table, write_batch, write_prefix
from shadow.sweep.cluster import private_ray_env, ray_processes
from tests.bad_inputs.contract import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]

YEAR = 365
BASE_ROWS = 3 * YEAR  # NOAA's first three years: the past the controller starts from
BATCHES = 2  # the next two years arrive, one batch each

# Two tiny candidates on the last two years before the holdout: each sweep takes seconds.
# The gate refuses only a challenger significantly worse (alpha 0.001) and has no latency
# guard (host timings on a shared 2-core machine are noise), so a fresh model passes.
SWEEP = """\
[sweep]
name = "live"
dataset = "{dataset}"
seed = 1

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

[gate]
require = "no-regression"
alpha = 0.001
guards = {{}}

[watch]
channel = "production"
mode = "auto"
poll_s = 1.0

[watch.triggers]
new_rows = 365
"""

ROW = json.dumps({"rows": [[0.0] * 8]}).encode()


def child_env(ray_tmp: Path) -> dict[str, str]:
    """Every child process: a loopback Ray of its own (the product's recipe), the home's store."""
    return private_ray_env(ray_tmp, {**os.environ, "SHADOW_STORE": ""})


def shadow_json(env: dict[str, str], *args: str) -> list | dict:
    """``shadow ARGS --format json`` in its own process: its stdout, parsed."""
    done = subprocess.run([sys.executable, "-m", "shadow", *args, "--format", "json"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(what: str, check: Callable[[], object], timeout_s: float,
             alive: subprocess.Popen[bytes], log: Path) -> object:
    """Poll ``check`` until it returns something truthy; fail with the controller's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert alive.poll() is None, f"the controller died while waiting for {what}:\n" \
                                     f"{log.read_text()[-3000:]}"
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n"
                         f"{log.read_text()[-3000:]}")


def promotions(home: Path) -> list[dict]:
    """The channel's promotion events, oldest first, read from the store (no CLI start-up)."""
    from selection.errors import ShadowError
    from selection.store import Store

    try:
        with Store.open(home, create=False) as store:
            return [{"candidate_id": e.candidate_id, "data_version": e.data_version,
                     "history_id": e.history_id}
                    for e in reversed(store.list_events(channel="production",
                                                        kinds="promotion"))]
    except ShadowError:  # the controller is still creating the store
        return []


@dataclass
class Client:
    """Sends POST /predict back to back on a keep-alive connection; records every answer."""

    host: str
    port: int
    answers: list[tuple[int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("POST", "/predict", body=ROW,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                body = json.loads(response.read())
                self.answers.append((response.status, body.get("candidate_id", "")))
                if response.status != 200:
                    self.failures.append(f"{response.status}: {body}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            time.sleep(0.01)  # a steady stream, leaving the 2 cores to the sweep
        conn.close()

    def serving(self) -> str | None:
        return self.answers[-1][1] if self.answers else None


def start_serve(home: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes],
                                                                    str, int]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--host", "127.0.0.1",
             "--port", "0"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink,
            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if " on http://127.0.0.1:" in line:
                port = line.rsplit(" on http://127.0.0.1:", 1)[1].split(";")[0].split()[0]
                return proc, "127.0.0.1", int(port.strip().rstrip("/"))
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"shadow serve did not start:\n{log.read_text()}")


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short folder of this test's own for the controller's Ray (sockets need short paths)."""
    folder = Path(tempfile.mkdtemp(prefix="live-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this test started
        proc.wait(timeout=30)
        return -signal.SIGKILL


def test_live_watch_appends_promote_and_serve_hot_swaps_without_a_failed_request(
    tmp_path: Path, ray_tmp: Path,
) -> None:
    noaa = find_manifest("noaa-weather")
    table = full_table(noaa)
    dataset = write_prefix(noaa, table, BASE_ROWS, tmp_path / "catalog" / "live",
                           name="noaa-live")
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(dataset=dataset))
    home = tmp_path / "home"
    env = child_env(ray_tmp)
    watch_log, serve_log = tmp_path / "watch.log", tmp_path / "serve.log"

    with watch_log.open("wb") as sink:
        watch = subprocess.Popen(
            [sys.executable, "-m", "shadow", "watch", str(config), "--home", str(home),
             "--format", "json"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink,
            start_new_session=True)
    serve: subprocess.Popen[bytes] | None = None
    client: Client | None = None
    thread: threading.Thread | None = None
    try:
        # No champion yet: the first pass sweeps the three years and promotes.
        first = wait_for("the first promotion", lambda: promotions(home), 240, watch, watch_log)
        assert isinstance(first, list) and len(first) == 1
        serve, host, port = start_serve(home, env, serve_log)
        client = Client(host, port)
        thread = threading.Thread(target=client.run, daemon=True)
        thread.start()
        wait_for("a first answer", client.serving, 30, watch, watch_log)
        assert client.serving() == first[0]["candidate_id"]

        served = [first[0]["candidate_id"]]
        for k in range(BATCHES):
            start = BASE_ROWS + k * YEAR
            batch = write_batch(table, start, start + YEAR, tmp_path / f"year-{k + 1}.csv")
            added = shadow_json(env, "data", "append", str(dataset), str(batch),
                                "--home", str(home))
            assert isinstance(added, dict) and added["rows"] == start + YEAR
            now = wait_for(f"the promotion after batch {k + 1}",
                           lambda n=k + 2: (lambda p: p if len(p) >= n else None)(promotions(home)),
                           240, watch, watch_log)
            assert isinstance(now, list)
            newest = now[-1]
            assert newest["data_version"] == added["fingerprint"]
            assert newest["candidate_id"] not in served
            wait_for(f"serve to answer with {newest['candidate_id']}",
                     lambda c=newest["candidate_id"]: client.serving() == c, 30, watch, watch_log)
            served.append(newest["candidate_id"])

        time.sleep(0.5)  # a few more requests on the last champion
        client.stop.set()
        thread.join(timeout=30)
        # SIGTERM while it waits for new rows: a clean stop, exit 0.
        assert stop(watch) == 0, watch_log.read_text()[-3000:]
    finally:
        if client is not None:
            client.stop.set()
        if thread is not None:
            thread.join(timeout=30)
        if serve is not None:
            stop(serve)
        stop(watch)
        leftover = ray_processes(str(ray_tmp))
        for pid in leftover:  # only processes naming this test's own Ray folder
            os.kill(pid, signal.SIGKILL)

    assert leftover == [], f"Ray processes of the controller outlived it: {leftover}"
    assert client is not None and client.failures == [], client.failures[:5]
    statuses = {status for status, _ in client.answers}
    assert statuses == {200} and len(client.answers) > 20
    # Every promoted champion answered, in promotion order, and nothing else did.
    seen = list(dict.fromkeys(c for _, c in client.answers))
    assert seen == served, (seen, served)

    # What happened, as a script reads it: three sweeps, three passed gates, three promotions.
    log = shadow_json(env, "events", "--channel", "production", "--home", str(home))
    assert isinstance(log, list)
    kinds = [e["kind"] for e in reversed(log)]
    assert kinds[0] == "controller" and kinds[-1] == "controller"
    assert [e["evidence"]["state"] for e in log if e["kind"] == "controller"] == ["stopped",
                                                                                 "started"]
    assert kinds.count("sweep_started") == kinds.count("sweep_finished") == BATCHES + 1
    gates = [e for e in log if e["kind"] == "gate"]
    assert len(gates) == BATCHES + 1 and all(g["evidence"]["passed"] for g in gates)
    assert "error" not in kinds
    rows = shadow_json(env, "history", "--channel", "production", "--home", str(home))
    assert isinstance(rows, list)
    assert [r["candidate_id"] for r in reversed(rows)] == served
    assert all(r["action"] == "promote" for r in rows)
