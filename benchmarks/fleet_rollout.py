"""Over the air: 50 devices follow one channel while promotions, rollbacks, faults and a canary happen.

Run: ``python benchmarks/fleet_rollout.py [--quick]``. Everything real, on loopback:
a ``shadow fleet serve`` process over a real store (tiny real ONNX models from
``selection.testing``), a fault-injecting proxy in front of it
(``selection.fleet.chaos``), 50 devices (``RemoteChannelRuntime`` threads in
this process, each with its own cache folder and prediction log) and one
``shadow fleet follow`` process. One load thread keeps every device answering
predictions the whole time; any failed prediction is counted.

1. promotions and rollbacks: time from ``promote``/``rollback`` returning to
   every device serving the new model (p50, max); bytes per idle poll, measured
   at the proxy: the HTTP request and 304 answer bytes it forwarded (TCP/IP
   framing not included), with the server's own count next to it;
2. faults, each while a promotion is pending: a corrupted download, the server
   gone mid-transfer (bodies cut in half), the server process SIGKILLed (and
   restarted), a device process SIGKILLed mid-download (restarted offline). Each
   must leave the old model serving and converge once the fault is gone;
3. a worse canary (``--canary 20%``: a model that agrees with the labels'
   teacher on about 40 % of rows, the champion on 90 %) rolled back by itself;
   the number of labelled canary requests it took is reported.

``unverified_models`` counts swaps (over every device) to a version whose
sha256 is not the one the store's history row records for it. The last stdout
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from selection import Store, promote  # noqa: E402
from selection.channels.promotion import history, rollback  # noqa: E402
from selection.fleet.chaos import FaultyProxy  # noqa: E402
from selection.fleet.rollout import RolloutPlan, load_rollout, start_event  # noqa: E402
from selection.home import Home  # noqa: E402
from selection.live.feedback import parse_feedback  # noqa: E402
from selection.runtime import RuntimeEvent, load_model_bytes  # noqa: E402
from selection.runtime.follow import RemoteChannelRuntime  # noqa: E402
from selection.signing import KeyPaths  # noqa: E402
from selection.testing import FEATURES, add_tiny_candidates, tiny_classifier  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_process(args: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    """A ``shadow`` process, and the URL its start line names."""
    process = subprocess.Popen([sys.executable, "-m", "shadow", *args], stderr=subprocess.PIPE,
                               text=True, env=ENV, cwd=REPO)
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(pattern, line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain
            return process, match.group(1)
        if not line and process.poll() is not None:
            raise SystemExit(f"{args[:2]} exited before it started")
    raise SystemExit(f"{args[:2]} did not start")


def wait_for(check: Any, timeout: float) -> float | None:
    """Seconds until ``check()`` held, None if it never did within ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            return None
        time.sleep(0.005)
    return time.monotonic() - start


class Load:
    """One thread: every device answers a request in turn; labels when asked (the canary phase)."""

    def __init__(self, devices: list[RemoteChannelRuntime], teacher: Any) -> None:
        self.devices = devices
        self.teacher = teacher
        self.failed = 0
        self.answered = 0
        self.labelled = 0
        self.label = False
        self.paused = False
        self._stop = threading.Event()
        self._rng = np.random.default_rng(0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.paused:
                time.sleep(0.01)
                continue
            rows = self._rng.normal(size=(5, len(FEATURES))).astype(np.float32)
            truth = self.teacher.run(rows).argmax(axis=1)
            noisy = np.where(self._rng.random(len(truth)) < 0.1, 1 - truth, truth)
            labels = [("dry", "rain")[i] for i in noisy]
            for device in self.devices:
                answers = []
                for row in rows:
                    try:
                        answers.append(device.predict({"rows": [row.tolist()]}))
                        self.answered += 1
                    except Exception:  # noqa: BLE001 - every failure counts, none may happen
                        self.failed += 1
                if self.label and device.log is not None and len(answers) == len(labels):
                    device.log.add_feedback(parse_feedback([
                        {"request_id": a["request_id"], "label": y}
                        for a, y in zip(answers, labels, strict=True)]))
                    self.labelled += len(labels)
            time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer promotions, smaller models")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--poll-ms", type=float, default=500)
    opts = parser.parse_args()
    changes = 4 if opts.quick else 10
    hidden = 256 if opts.quick else 4096
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                else None))
    home = Home.resolve(tmp / "home")
    store = Store.open(home)
    names = [f"m-{i}" for i in range(9)]  # m-5.. are new to every device (the fault cases)
    add_tiny_candidates(store, names, hidden=hidden)
    promote(store, "m-0")
    pub = KeyPaths.of(home.root).public
    server, server_url = start_process(
        ["fleet", "serve", "--home", str(home.root), "--port", "0", "--refresh-ms", "100"],
        r"on (http://127\.0\.0\.1:\d+)")
    port = int(server_url.rsplit(":", 1)[1])
    proxy = FaultyProxy(("127.0.0.1", port))
    swaps: list[RuntimeEvent] = []
    devices = [RemoteChannelRuntime(
        proxy.url, tmp / "devices" / f"d{i:02d}", device_id=f"d{i:02d}", trusted_keys=[pub],
        poll_s=opts.poll_ms / 1000, backoff_max_s=2.0, on_event=swaps.append,
        log=tmp / "devices" / f"d{i:02d}.db") for i in range(opts.devices)]
    t = time.monotonic()
    for device in devices:
        device.start()
    note(f"{len(devices)} devices up in {time.monotonic() - t:.1f} s")
    teacher = load_model_bytes(tiny_classifier(1000, hidden=hidden), candidate_id="teacher")
    load = Load(devices, teacher)
    out: dict[str, Any] = {"devices": len(devices), "poll_ms": opts.poll_ms,
                           "model_bytes": len(tiny_classifier(1000, hidden=hidden))}
    timeout = 30.0

    def all_on(sha: str) -> bool:
        return all(d.model.sha256 == sha for d in devices)

    # 1. promotions and rollbacks.
    plan = ["m-1", "m-2", None, None, "m-3", None, "m-1", None, "m-2", None][:changes]
    times = []
    for step in plan:
        record = rollback(store) if step is None else promote(store, step)
        took = wait_for(lambda r=record: all_on(r.sha256), timeout)
        times.append(took if took is not None else float("inf"))
        note(f"{'rollback' if step is None else 'promote ' + step}: all devices in {took}")
        time.sleep(0.3)
    out["promote_to_all_devices_s_p50"] = round(statistics.median(times), 3)
    out["promote_to_all_devices_s_max"] = round(max(times), 3)
    out["changes"] = len(times)
    # Idle polls with the devices answering requests (each poll reports its new counts), then
    # with the devices idle (no counts to report: the 304 alone).
    # Measured on the wire at the proxy: the request and 304 bytes it forwarded per idle poll
    # (HTTP bytes; TCP/IP framing and the connection's handshake not included), next to the
    # server's own count of the same (rebuilt from the parsed headers) as a cross-check.
    for key, busy in (("bytes_per_idle_poll_reporting", True), ("bytes_per_idle_poll", False)):
        load.paused = not busy
        time.sleep(2 * opts.poll_ms / 1000)
        before, wire_before = _fleet(server_url)["counts"], dict(proxy.wire)
        time.sleep(4 * opts.poll_ms / 1000)
        after, wire_after = _fleet(server_url)["counts"], dict(proxy.wire)
        polls = wire_after["idle_polls"] - wire_before["idle_polls"]
        out[key] = round((wire_after["idle_bytes"] - wire_before["idle_bytes"]) / max(1, polls), 1)
        server_polls = after["idle_polls"] - before["idle_polls"]
        out[key + "_server_count"] = round(
            (after["idle_bytes"] - before["idle_bytes"]) / max(1, server_polls), 1)
    load.paused = False

    # 2. faults: each keeps the old model serving, then converges once lifted.
    faults: dict[str, Any] = {}
    for fault, fresh in (("corrupt", "m-5"), ("cut", "m-6")):
        old = devices[0].model.sha256
        proxy.mode = fault  # type: ignore[assignment]
        broken_before = proxy.faults
        record = promote(store, fresh)
        time.sleep(2.0)
        kept = all_on(old)
        broken = proxy.faults - broken_before
        proxy.mode = "pass"
        took = wait_for(lambda r=record: all_on(r.sha256), timeout)
        faults[fault] = {"kept_old_model": kept, "broken_downloads": broken, "converged_s":
                         None if took is None else round(took, 3)}
        rollback(store)
        wait_for(lambda o=old: all_on(o), timeout)
    # The server process killed: devices keep serving; a restarted server is found again.
    old = devices[0].model.sha256
    server.send_signal(signal.SIGKILL)
    server.wait()
    record = promote(store, "m-7")
    time.sleep(2.0)
    kept = all_on(old)
    server, _ = start_process(["fleet", "serve", "--home", str(home.root), "--port", str(port),
                               "--refresh-ms", "100"], r"on (http://127\.0\.0\.1:\d+)")
    took = wait_for(lambda r=record: all_on(r.sha256), timeout)
    faults["server_killed"] = {"kept_old_model": kept,
                               "converged_s": None if took is None else round(took, 3)}
    rollback(store)
    wait_for(lambda: all_on(old), timeout)
    faults["device_killed"] = _device_kill(store, home, pub, port, tmp)
    wait_for(lambda: all_on(old), timeout)
    out["faults"] = faults
    out["faults_ok"] = all(f.get("kept_old_model", f.get("restarted_offline_on_old_model"))
                           and f["converged_s"] is not None for f in faults.values())

    # 3. a worse canary, rolled back by itself on labelled evidence.
    load.label = True
    time.sleep(2.0)  # the champion's labelled requests come in first
    canary = RolloutPlan(share=0.2, widen_after_s=3600, min_labelled=200, min_predictions=200)
    out["canary_max_looks"] = canary.max_looks
    t = time.monotonic()
    promote(store, "m-4", event=start_event(canary))
    rolled = wait_for(lambda: _state(store) == "rolled_back", 120)
    back = wait_for(lambda: all_on(history(store)[0].sha256), timeout) if rolled else None
    event = next((e for e in store.list_events(channel="production", kinds="rollout")
                  if e.evidence.get("action") == "rollback"), None)
    out["canary_rolled_back"] = bool(rolled is not None and back is not None)
    out["canary_rollback_s"] = round(time.monotonic() - t, 2) if rolled is not None else None
    if event is not None:
        out["canary_labelled_at_rollback"] = event.evidence["canary"]["labelled"]
        out["control_labelled_at_rollback"] = event.evidence["control"]["labelled"]
        out["canary_accuracy"] = round(event.evidence["canary"]["correct"]
                                       / max(1, event.evidence["canary"]["labelled"]), 3)
        out["control_accuracy"] = round(event.evidence["control"]["correct"]
                                        / max(1, event.evidence["control"]["labelled"]), 3)
        out["canary_min_labelled"] = canary.min_labelled
        out["canary_look_at_rollback"] = event.evidence.get("looks", {}).get("accuracy")
    load.stop()
    out["failed_predictions"] = load.failed
    out["predictions"] = load.answered
    out["unverified_models"] = _unverified(store, swaps)
    out["swaps"] = len([e for e in swaps if e.kind == "swapped"])
    for device in devices:
        device.stop()
        if device.log is not None:
            device.log.close()
    proxy.close()
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    store.close()
    print(json.dumps(out))


def _state(store: Store) -> str | None:
    rollout = load_rollout(store, "production")
    return None if rollout is None else rollout.state


def _fleet(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url + "/v1/fleet", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def _unverified(store: Store, swaps: list[RuntimeEvent]) -> int:
    """Swaps to a version whose sha256 is not what the store's history row says."""
    shas = {r.history_id: r.sha256 for r in history(store)}
    bad = 0
    for event in swaps:
        if event.kind not in ("swapped", "loaded") or event.version is None:
            continue
        history_id = int(event.version.split("-")[-2])
        bad += shas.get(history_id) != event.sha256
    return bad


def _device_kill(store: Store, home: Home, pub: Path, port: int, tmp: Path) -> dict[str, Any]:
    """A real device process SIGKILLed mid-download restarts on its old model, then converges."""
    import urllib.request

    proxy = FaultyProxy(("127.0.0.1", port), slow_chunk=1024, slow_delay_s=0.05)
    cache = tmp / "proc-cache"
    args = ["fleet", "follow", proxy.url, "--trust-key", str(pub), "--device-id", "proc",
            "--cache", str(cache), "--poll-ms", "200", "--port", "0"]

    def serving(url: str) -> str:
        with urllib.request.urlopen(url + "/model", timeout=5) as answer:
            return str(json.loads(answer.read())["model"]["sha256"])

    process, url = start_process(args, r"on (http://127\.0\.0\.1:\d+)")
    old = serving(url)
    proxy.mode = "slow"
    record = promote(store, "m-8")
    partial = wait_for(lambda: any(p.stat().st_size > 0 for p in
                                   (cache / ".versions").glob(".tmp-*/model.onnx")), 30)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_mid = bool(list((cache / ".versions").glob(".tmp-*")))
    proxy.mode = "down"
    process, url = start_process(args, r"on (http://127\.0\.0\.1:\d+)")
    restarted_on_old = serving(url) == old
    proxy.mode = "pass"
    took = wait_for(lambda: serving(url) == record.sha256, 30)
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    proxy.close()
    rollback(store)
    return {"killed_mid_download": killed_mid and partial is not None,
            "restarted_offline_on_old_model": restarted_on_old,
            "converged_s": None if took is None else round(took, 3)}


if __name__ == "__main__":
    main()
