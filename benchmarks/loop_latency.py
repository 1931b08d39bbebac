"""From a batch's arrival to the new champion answering: the live loop's latency, end to end.

Everything is the product, run as a user runs it, each piece its own process:

- ``shadow watch CONFIG`` (continuous, ``poll_s = 1``) on the demo-size sweep: the shipped
  ``datasets/noaa-weather/sweep.toml`` (its slices, model grid and devices) with a ``[watch]``
  table (``mode = "auto"``, ``new_rows = 365``) and a ``[gate]`` table added, over a copy of NOAA's
  history that stops ``cycles`` years before its end (``shadow.data.history.write_prefix``);
- ``shadow serve`` on 127.0.0.1, with a client thread asking ``POST /predict`` every 20 ms;
- per cycle, ``shadow data append`` adds NOAA's next year (``write_batch``).

A cycle's latency runs from the moment ``shadow data append`` returns to the first answer of
``shadow serve`` that names the newly promoted candidate (``stored_to_serving_s`` starts earlier,
when the batch commits: the controller may see it before the append's process has exited, which
makes ``detect_s`` slightly negative on a loaded machine). The breakdown comes from the event log's
timestamps (``Store.list_events``): detect (append returned -> ``sweep_started``: the
controller's poll, loading the new version, scoring the champion, the trigger), sweep
(``sweep_started`` -> ``sweep_finished``, split by the sweep's own clock into ``sweep_run_s``,
Ray's start and the candidates, and ``sweep_setup_s``, preparing the slices), gate+promote
(``sweep_finished`` -> ``promotion``) and swap (``promotion`` -> the client's first answer from
the new model).

The gate is set so promotions happen on merit, not by luck: ``require = "no-regression"`` with
``alpha = 0.001`` refuses only a challenger that is significantly worse than the champion on the
same 1,095 newest rows, and ``guards = {}`` drops the default latency guard (host timings on a
shared 2-core machine are noise, not a reason to keep a stale model). A pass that ends without a
promotion (a refusal, an error) is counted in ``cycles_without_promotion``, not in the latency.

The first pass (no champion yet) sweeps and promotes before any batch arrives; it is reported
as ``first_pass_s`` and not counted as a cycle. ``--quick`` runs 3 cycles instead of 6 (the
same demo-size sweep: the target is for that sweep). Spread: the cycles are the repeated runs,
so the figures carry their min, max and standard deviation.

Prints progress on stderr and one JSON object as the last stdout line; writes it to
``benchmarks/results/loop_latency.json`` (``loop_latency_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadow.sweep.cluster import private_ray_env, ray_processes

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHIPPED = REPO / "datasets" / "noaa-weather" / "sweep.toml"
YEAR = 365
TARGET_S = 60.0
CHANNEL = "production"

WATCH_TABLES = """
# Added by benchmarks/loop_latency.py: promote on merit (see its docstring), watch every second.
[gate]
require = "no-regression"
alpha = 0.001
guards = {}

[watch]
channel = "production"
mode = "auto"
poll_s = 1.0

[watch.triggers]
new_rows = 365
"""


def log(line: str) -> None:
    print(f"[loop_latency {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 cycles instead of 6")
    p.add_argument("--cycles", type=int, default=None, help="appended years (default 6, quick 3)")
    p.add_argument("--config", type=Path, default=SHIPPED,
                   help="sweep file whose slices, model and devices are timed (no [watch]/[gate])")
    p.add_argument("--devices", default=None,
                   help='override the sweep\'s devices, comma-separated (e.g. "host-cpu")')
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a cycle may take")
    p.add_argument("--out", type=Path, default=None, help="where to write the JSON result")
    return p.parse_args(argv)


def sweep_file(shipped: Path, dataset: Path, devices: list[str] | None) -> str:
    """The shipped sweep file pointed at ``dataset``, with [gate] and [watch] added."""
    text = shipped.read_text(encoding="utf-8")
    parsed = tomllib.loads(text)
    clash = [t for t in ("gate", "watch") if t in parsed]
    if clash:
        raise SystemExit(f"loop_latency: {shipped} already has {clash}; pass --config with a "
                         "sweep file without them (this benchmark sets both)")
    text, n = re.subn(r'(?m)^dataset\s*=.*$', f"dataset = {json.dumps(str(dataset))}", text,
                      count=1)
    assert n == 1, f"{shipped} has no [sweep] dataset line"
    if devices is not None:
        line = f"devices = {json.dumps(devices)}"
        text, n = re.subn(r'(?m)^devices\s*=.*$', line, text, count=1)
        if n == 0:
            text = re.sub(r'(?m)^(dataset\s*=.*)$', lambda m: f"{m.group(1)}\n{line}", text,
                          count=1)
    return text + WATCH_TABLES


def child_env(ray_tmp: Path) -> dict[str, str]:
    """Every child process: a loopback Ray of its own (the product's recipe), the home's store."""
    return private_ray_env(ray_tmp, {**os.environ, "SHADOW_STORE": ""})


@dataclass
class Client:
    """POST /predict every 20 ms on a keep-alive connection; when each candidate first answered."""

    host: str
    port: int
    row: bytes
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)
    last: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("POST", "/predict", body=self.row,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                body = json.loads(response.read())
                now = time.time()
                self.requests += 1
                if response.status != 200:
                    self.failures.append(f"{response.status}: {body}")
                else:
                    self.last = body["candidate_id"]
                    self.first_seen.setdefault(self.last, now)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                self.requests += 1
                self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.stop.wait(0.02)
        conn.close()


def shadow_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "shadow", *args, "--format", "json"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"shadow {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def version_events(home: Path, version: str) -> dict[str, list[Any]]:
    """The channel's events on data ``version`` by kind, oldest first (read from the store)."""
    from selection.errors import ShadowError
    from selection.store import Store

    try:
        with Store.open(home, create=False) as store:
            events = list(reversed(store.list_events(channel=CHANNEL)))
    except ShadowError:  # the controller is still creating the store
        return {}
    by_kind: dict[str, list[Any]] = {}
    for event in events:
        if event.data_version == version:
            by_kind.setdefault(event.kind, []).append(event)
    return by_kind


def start_serve(home: Path, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes],
                                                                         int]:
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--host", "127.0.0.1",
             "--port", "0"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink,
            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(r" on http://127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"shadow serve exited: {log_path.read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"shadow serve did not start: {log_path.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait; SIGKILL of its own session only if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return -signal.SIGKILL


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None, "min": None, "mean": None, "stdev": None}
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2),
            "min": round(min(values), 2), "mean": round(statistics.fmean(values), 2),
            "stdev": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}


def wait_promoted(home: Path, version: str, client: Client, watch: subprocess.Popen[bytes],
                  timeout_s: float) -> tuple[str, dict[str, list[Any]], float | None]:
    """Until the client sees this version's promoted candidate, or the pass ended without one.

    Returns (outcome, the version's events, when the new model first answered).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = version_events(home, version)
        promoted = events.get("promotion")
        if promoted:
            candidate = promoted[-1].candidate_id
            if candidate in client.first_seen:
                return "promoted", events, client.first_seen[candidate]
        elif any(not g.evidence.get("passed") for g in events.get("gate", [])):
            return "refused", events, None
        elif events.get("error"):
            return "error", events, None
        if watch.poll() is not None:
            return "controller_died", events, None
        time.sleep(0.05)
    return "timed_out", version_events(home, version), None


def cycle_record(k: int, arrived: float, outcome: str, events: dict[str, list[Any]],
                 answered: float | None) -> dict[str, Any]:
    def at(kind: str, last: bool = False) -> float | None:
        found = events.get(kind)
        return None if not found else found[-1 if last else 0].at.timestamp()

    started, finished, promoted = at("sweep_started"), at("sweep_finished"), at("promotion")
    record: dict[str, Any] = {"cycle": k, "outcome": outcome}
    if answered is not None:
        record["arrival_to_serving_s"] = round(answered - arrived, 2)
    if started is not None:
        record["detect_s"] = round(started - arrived, 2)
    if started is not None and finished is not None:
        record["sweep_s"] = round(finished - started, 2)
        evidence = events["sweep_finished"][-1].evidence
        if isinstance(evidence.get("seconds"), (int, float)):
            # run_sweep's own clock (Ray's start, the candidates, their store writes); the rest
            # of sweep_s is prepare_sweep (loading the version, cutting the slices).
            record["sweep_run_s"] = round(float(evidence["seconds"]), 2)
            record["sweep_setup_s"] = round(record["sweep_s"] - record["sweep_run_s"], 2)
        record["candidates_ok"] = evidence.get("ok")
        record["candidates_failed"] = evidence.get("failed")
    if finished is not None and promoted is not None:
        record["gate_promote_s"] = round(promoted - finished, 2)
    if promoted is not None and answered is not None:
        record["swap_s"] = round(answered - promoted, 2)
    gates = events.get("gate", [])
    if gates:
        record["gate_passed"] = bool(gates[-1].evidence.get("passed"))
        if not record["gate_passed"]:
            record["gate_reasons"] = [c.get("detail") for c in gates[-1].evidence.get("checks", [])
                                      if not c.get("passed")]
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shadow.data.catalog import find_manifest
    from shadow.data.history import full_table, write_batch, write_prefix

    cycles = args.cycles or (3 if args.quick else 6)
    devices = args.devices.split(",") if args.devices else None
    began = time.perf_counter()
    load_start = os.getloadavg()
    noaa = find_manifest("noaa-weather")
    table = full_table(noaa)
    base = len(table) - cycles * YEAR
    scratch = Path(tempfile.mkdtemp(prefix="loop-lat-", dir="/tmp"))  # short: Ray's socket paths
    ray_tmp = scratch / "ray"
    ray_tmp.mkdir()
    env = child_env(ray_tmp)
    home = scratch / "home"
    dataset = write_prefix(noaa, table, base, scratch / "catalog" / "noaa-live", name="noaa-live")
    config = scratch / "sweep.toml"
    config.write_text(sweep_file(args.config, dataset, devices), encoding="utf-8")
    swept_devices = tomllib.loads(config.read_text())["sweep"].get("devices", ["host-cpu"])
    log(f"{base} base rows, {cycles} cycles of {YEAR} rows; devices {swept_devices}; "
        f"{os.cpu_count()} CPUs; load {load_start[0]:.2f}")
    row = json.dumps({"rows": [[0.0] * len(noaa.features)]}).encode()

    watch_log = scratch / "watch.log"
    with watch_log.open("wb") as sink:
        watch = subprocess.Popen(
            [sys.executable, "-m", "shadow", "watch", str(config), "--home", str(home),
             "--format", "json"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink,
            start_new_session=True)
    serve: subprocess.Popen[bytes] | None = None
    client: Client | None = None
    thread: threading.Thread | None = None
    records: list[dict[str, Any]] = []
    first_pass_s: float | None = None
    watch_rc: int | None = None
    try:
        # The first pass: no champion, the first sweep is due; wait for its promotion.
        t0 = time.time()
        base_version = shadow_json(env, "data", "versions", str(dataset),
                                   "--home", str(home))[-1]["fingerprint"]
        deadline = time.monotonic() + args.timeout
        while not version_events(home, base_version).get("promotion"):
            if watch.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no first promotion: {watch_log.read_text()[-3000:]}")
            time.sleep(0.2)
        first_pass_s = round(time.time() - t0, 2)
        log(f"first pass promoted in {first_pass_s} s; starting shadow serve")
        serve, port = start_serve(home, env, scratch / "serve.log")
        client = Client("127.0.0.1", port, row)
        thread = threading.Thread(target=client.run, daemon=True)
        thread.start()
        while not client.first_seen and not client.failures:
            time.sleep(0.05)

        for k in range(1, cycles + 1):
            start = base + (k - 1) * YEAR
            batch = write_batch(table, start, start + YEAR, scratch / f"year-{k}.csv")
            added = shadow_json(env, "data", "append", str(dataset), str(batch),
                                "--home", str(home))
            arrived = time.time()  # the append has returned: the batch is stored
            # versions.json is replaced atomically when the batch commits: the controller can
            # see the new version from then on, while the append's process is still exiting.
            stored = (home / "data" / "noaa-live" / "versions.json").stat().st_mtime
            outcome, events, answered = wait_promoted(home, added["fingerprint"], client, watch,
                                                      args.timeout)
            record = cycle_record(k, arrived, outcome, events, answered)
            record["append_exit_lag_s"] = round(arrived - stored, 2)
            if answered is not None:
                record["stored_to_serving_s"] = round(answered - stored, 2)
            records.append(record)
            log(json.dumps(record))
            if outcome in ("controller_died", "timed_out"):
                break
        client.stop.set()
        thread.join(timeout=30)
        watch_rc = stop(watch)
    finally:
        if client is not None:
            client.stop.set()
        if thread is not None:
            thread.join(timeout=30)
        serve_rc = stop(serve) if serve is not None else None
        if watch_rc is None:
            watch_rc = stop(watch)
        leftover = ray_processes(str(ray_tmp))
        for pid in leftover:  # only processes naming this run's own Ray folder
            os.kill(pid, signal.SIGKILL)
        if watch_rc != 0:
            log(f"shadow watch exited {watch_rc}: {watch_log.read_text()[-2000:]}")
        shutil.rmtree(scratch, ignore_errors=True)

    promoted = [r for r in records if r["outcome"] == "promoted"]
    latencies = [r["arrival_to_serving_s"] for r in promoted]
    summary: dict[str, Any] = {
        "benchmark": "loop_latency",
        "arrival_to_serving_s_p50": stats(latencies)["p50"],
        "arrival_to_serving_s_max": stats(latencies)["max"],
        "arrival_to_serving_s": stats(latencies),
        # From the batch's commit (versions.json replaced) instead of the append CLI returning.
        "stored_to_serving_s": stats([r["stored_to_serving_s"] for r in promoted]),
        "append_exit_lag_s": stats([r["append_exit_lag_s"] for r in records]),
        "target_s": TARGET_S,
        "meets_target": bool(latencies) and max(latencies) < TARGET_S,
        "cycles": len(promoted),
        "cycles_planned": cycles,
        "cycles_without_promotion": sum(r["outcome"] in ("refused", "error") for r in records),
        "cycles_unfinished": sum(r["outcome"] in ("controller_died", "timed_out")
                                 for r in records),
        "failed_requests": len(client.failures) if client else None,
        "requests": client.requests if client else 0,
        "failure_samples": client.failures[:3] if client else [],
        "breakdown_s": {stage: stats([r[stage] for r in promoted if stage in r])
                        for stage in ("detect_s", "sweep_s", "sweep_setup_s", "sweep_run_s",
                                      "gate_promote_s", "swap_s")},
        "candidates_per_sweep": sorted({r.get("candidates_ok") for r in promoted} - {None}),
        "first_pass_s": first_pass_s,
        "per_cycle": records,
        "devices": swept_devices,
        "sweep_config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO)
                            else args.config),
        "gate": {"require": "no-regression", "alpha": 0.001, "guards": {}},
        "poll_s": 1.0,
        "base_rows": base,
        "batch_rows": YEAR,
        "watch_exit_code": watch_rc,
        "serve_exit_code": serve_rc,
        "leftover_ray_processes": len(leftover),
        "cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "quick": args.quick,
        "seconds_total": round(time.perf_counter() - began, 1),
    }
    out = args.out or RESULTS / ("loop_latency_quick.json" if args.quick else "loop_latency.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out}")
    print(json.dumps(summary))
    return 0 if promoted and summary["failed_requests"] == 0 and watch_rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
