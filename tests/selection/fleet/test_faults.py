"""Faults between the fleet server and a device: each keeps the old model serving, then converges.

A real proxy on 127.0.0.1 breaks real downloads (a flipped byte, a server gone
mid-transfer, no server at all, a slow link); the killed device is a real
`shadow fleet follow` process, SIGKILLed while its download is half done.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from selection import promote
from selection.fleet.chaos import FaultyProxy
from tests.selection.fleet.conftest import Fleet
from tests.selection.fleet.test_serve_follow import ROW, wait_for

REPO = Path(__file__).resolve().parents[3]


def _upstream(fleet: Fleet) -> tuple[str, int]:
    host, port = fleet.server.server_address[:2]
    return str(host), int(port)


@pytest.mark.parametrize("fault", ["corrupt", "cut", "down"])
def test_a_broken_download_keeps_the_old_model_then_converges(fleet: Fleet, fault: str) -> None:
    proxy = FaultyProxy(_upstream(fleet))
    try:
        with fleet.device("dev-1", url=proxy.url) as runtime:
            proxy.mode = fault  # type: ignore[assignment]
            promote(fleet.store, "c-b")
            wait_for(lambda: runtime.status()["remote"]["failures"] >= 3)
            assert runtime.model.candidate_id == "c-a"  # still serving, never the broken bytes
            assert runtime.predict(ROW)["candidate_id"] == "c-a"
            if fault != "down":
                assert proxy.faults >= 2  # the downloads really were broken
                assert "corrupted or cut short" in runtime.status()["remote"]["last_error"] \
                    or "failed after" in runtime.status()["remote"]["last_error"]
            leftovers = [p.name for p in (runtime.channels_dir / ".versions").iterdir()]
            assert len(leftovers) == 1  # nothing unverified kept
            proxy.mode = "pass"
            wait_for(lambda: runtime.model.candidate_id == "c-b")
            assert runtime.status()["remote"]["failures"] == 0
    finally:
        proxy.close()


def _start_device(url: str, pub: Path, cache: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "shadow", "fleet", "follow", url, "--trust-key", str(pub),
         "--device-id", "dev-proc", "--cache", str(cache), "--poll-ms", "100", "--port", "0"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if match:
            return process, match.group(1)
        assert line or process.poll() is None, "device exited before serving"
    raise AssertionError("device did not start")


def _serving(url: str) -> str:
    with urllib.request.urlopen(url + "/model", timeout=5) as answer:
        return str(json.loads(answer.read())["model"]["candidate_id"])


@pytest.mark.slow
def test_a_device_killed_mid_download_restarts_on_its_old_model_offline(fleet: Fleet) -> None:
    proxy = FaultyProxy(_upstream(fleet), slow_chunk=64, slow_delay_s=0.2)
    cache = fleet.tmp / "proc-cache"
    process, url = _start_device(proxy.url, fleet.pub, cache)
    try:
        assert _serving(url) == "c-a"
        proxy.mode = "slow"
        promote(fleet.store, "c-b")
        # Kill it while the model is half downloaded into its staging folder.
        # Generous: a loaded 2-core CI machine once took over 30 s to reach the next poll.
        wait_for(lambda: any(p.stat().st_size > 0
                             for p in (cache / ".versions").glob(".tmp-*/model.onnx")), 120)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert list((cache / ".versions").glob(".tmp-*"))  # really killed mid-download
        # Back up with the server gone: the cached, verified old model serves at once.
        proxy.mode = "down"
        process, url = _start_device(proxy.url, fleet.pub, cache)
        assert _serving(url) == "c-a"
        assert not list((cache / ".versions").glob(".tmp-*"))  # the half download was dropped
        proxy.mode = "pass"
        wait_for(lambda: _serving(url) == "c-b", 120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
        proxy.close()
