"""A device on the slim install (no store, no training stack) follows a fleet server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from selection import promote
from tests.selection.fleet.conftest import Fleet
from tests.selection.fleet.test_serve_follow import wait_for
from tests.shadow.cli.test_startup import REPO, RUNNER, STORE, TRAINING


def test_fleet_follow_runs_without_the_store_or_training_installed(fleet: Fleet,
                                                                    tmp_path: Path) -> None:
    modules = tmp_path / "modules.json"
    env = {**os.environ, "SHADOW_STORE": "", "SHADOW_TEST_MODULES": str(modules),
           "SHADOW_TEST_BLOCK": ",".join(TRAINING + STORE)}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "fleet", "follow", fleet.server.url, "--trust-key",
         str(fleet.pub), "--device-id", "slim-1", "--cache", str(tmp_path / "cache"),
         "--poll-ms", "100", "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")

        def serving() -> str:
            with urllib.request.urlopen(match.group(1) + "/model", timeout=5) as answer:
                return str(json.loads(answer.read())["model"]["candidate_id"])

        assert serving() == "c-a"
        promote(fleet.store, "c-b")
        wait_for(lambda: serving() == "c-b", 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    loaded = set(json.loads(modules.read_text()))  # written at exit: it stopped cleanly
    assert not loaded & set(TRAINING + STORE)
