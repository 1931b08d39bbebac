"""Promotion under load: hot swap vs restarting the server, measured end to end.

Starts ``shadow serve`` as a subprocess on a free loopback port, over a home
populated with three small real ONNX models (``selection.testing``:
no Ray, no torch). Another *process* drives closed-loop load (``--clients``
threads, one keep-alive connection each, one row per request). Meanwhile this
process runs the real CLI: ``shadow promote m-b``, ``shadow rollback``,
``shadow promote m-c``, ``shadow rollback``, ... (``--ops`` of them).

Definitions (every timestamp is CLOCK_MONOTONIC, shared by the processes):

- state S_i: the (candidate_id, sha256) the channel holds after op i (S_0 = m-a).
- wrong_model: an answer whose (candidate_id, sha256) pair is not one of the
  states legitimately current while the request was in flight: from
  S_{k-1} (k = ops returned before it was sent; the server may still be
  swapping to S_k) to S_m (m = ops started before its answer arrived).
  Rotating through three models makes "neither old nor new" observable.
- stale_after_swap: an answer from the old model to a request sent after an
  earlier answer from the new one (a swap that went backwards).
- swap_ms: per op, from ``shadow promote``/``rollback`` returning to the first
  answer received from the new model (0 when the server already swapped and
  answered from it before the command returned).
- link_to_answer_ms: per op, from the channel symlink swap (its mtime) to the
  first answer from the new model: the runtime's own delay (poll + verify + load
  + smoke test), without the CLI's exit time that swap_ms includes.
- restart comparison: the same load and the same ops, but the server runs with
  ``--no-reload`` and is restarted (SIGTERM, start, wait until it listens) after
  each op: restart_failed counts the requests that failed meanwhile (clients
  retry after 5 ms), restart_gap_ms is from the op returning to the first answer
  from the new model.

``requests`` counts every request sent (answered or failed); ``throughput_rps``
counts answers per second while the ops ran (the CLI processes share the CPU).

Last stdout line: one JSON object. ``--quick``: 50 ops, 6 restarts. Timings on
a shared 2-core machine are noisy: ``load_avg_1m`` is reported beside them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selection import Store, promote  # noqa: E402
from selection.testing import FEATURES, add_tiny_candidates  # noqa: E402

MODELS = ["m-a", "m-b", "m-c"]
BODY = json.dumps({"rows": [[0.25] * len(FEATURES)]}).encode()
ENV = {**os.environ, "SHADOW_STORE": ""}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, port: int, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", str(port), *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if " on http://" not in first:
        channels = home / "channels"
        listing = sorted(os.listdir(channels)) if channels.is_dir() else "no channels dir"
        raise SystemExit(f"shadow serve did not start: {first}{proc.stderr.read()} "
                         f"(channels: {listing})")
    lines = [first]
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    return proc, lines


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client_main(port: int, threads: int, stop: Any, out_path: str) -> None:
    """Closed-loop load: each thread sends one request, waits for the answer, repeats."""
    records: list[list[list[Any]]] = [[] for _ in range(threads)]

    def loop(mine: list[list[Any]]) -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/predict", body=BODY)
                response = conn.getresponse()
                data = json.loads(response.read())
                ok = response.status == 200
                mine.append([sent, time.monotonic(), ok, data.get("candidate_id"),
                             data.get("sha256")])
            except (OSError, http.client.HTTPException, ValueError):
                mine.append([sent, time.monotonic(), False, None, None])
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.005)  # a real client backs off instead of spinning on a dead port

    workers = [threading.Thread(target=loop, args=(r,)) for r in records]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    Path(out_path).write_text(json.dumps([row for r in records for row in r]))


def run_op(home: Path, i: int) -> tuple[list[str], float, float]:
    """Op i (1-based): promote m-b, rollback, promote m-c, rollback, ..."""
    if i % 2 == 0:
        argv = ["rollback", "--reason", "bench"]
    else:
        argv = ["promote", MODELS[1 + (i // 2) % 2], "--force", "--reason", "bench"]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shadow", *argv, "--home", str(home)],
                          cwd=REPO, capture_output=True, text=True, env=ENV)
    end = time.monotonic()
    if done.returncode != 0:
        raise SystemExit(f"shadow {' '.join(argv)} failed: {done.stderr}")
    return argv, start, end


def drive(home: Path, port: int, n_ops: int, clients: int, restart: bool,
          states: list[tuple[str, str]], shas: dict[str, str], pause: float) -> dict[str, Any]:
    """One phase: a server, a load process, ``n_ops`` ops; returns the raw timeline."""
    server, log = start_server(home, port, *(["--no-reload"] if restart else []))
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    stop = ctx.Event()
    out = tempfile.mktemp(suffix=".json")
    load = ctx.Process(target=client_main, args=(port, clients, stop, out), daemon=True)
    load.start()
    ops: list[tuple[float, float, float]] = []
    try:
        time.sleep(1.0)  # warm up
        began = time.monotonic()
        for i in range(1, n_ops + 1):
            argv, start, end = run_op(home, i)
            model = argv[1] if argv[0] == "promote" else "m-a"
            states.append((model, shas[model]))
            # The symlink is created just before its rename into place, so its
            # mtime (wall clock) is when the swap happened; map it to monotonic.
            swapped = os.lstat(home / "channels" / "production").st_mtime_ns / 1e9
            ops.append((start, end, swapped - (time.time() - time.monotonic())))
            if restart:
                stop_server(server)
                server, log = start_server(home, port, "--no-reload")
            time.sleep(pause)
        finished = time.monotonic()
    finally:
        stop.set()
        load.join(60)
        stop_server(server)
    rows = json.loads(Path(out).read_text())
    os.unlink(out)
    return {"rows": rows, "ops": ops, "began": began, "finished": finished, "log": log}


def analyse(run: dict[str, Any], states: list[tuple[str, str]]) -> dict[str, Any]:
    rows = sorted(run["rows"], key=lambda r: r[1])
    ops = run["ops"]
    starts = np.array([s for s, _, _ in ops])
    returns = np.array([e for _, e, _ in ops])
    links = np.array([w for _, _, w in ops])
    wrong = stale = 0
    first_new: list[float | None] = [None] * len(ops)
    for sent, received, ok, cid, sha in rows:
        if not ok:
            continue
        k = int(np.searchsorted(returns, sent, side="right"))
        m = int(np.searchsorted(starts, received, side="right"))
        allowed = states[max(k - 1, 0): m + 1]
        if (cid, sha) not in allowed:
            wrong += 1
        if m >= 1 and (cid, sha) == states[m] and first_new[m - 1] is None:
            first_new[m - 1] = received
    for i, seen in enumerate(first_new):
        end = starts[i + 1] if i + 1 < len(ops) else float("inf")
        if seen is None:
            continue
        # After the first answer from S_{i+1}, a request sent later must not get S_i back.
        stale += sum(1 for s, _, ok, c, h in rows
                     if ok and seen < s < end and (c, h) == states[i])
    delays = [max(0.0, (seen - returns[i]) * 1000) for i, seen in enumerate(first_new)
              if seen is not None]
    from_link = [(seen - links[i]) * 1000 for i, seen in enumerate(first_new) if seen is not None]
    in_window = [r for r in rows if r[2] and run["began"] <= r[0] <= run["finished"]]
    seconds = run["finished"] - run["began"]
    return {
        "requests": len(rows),
        "failed": sum(1 for r in rows if not r[2]),
        "wrong_model": wrong,
        "stale_after_swap": stale,
        "throughput_rps": round(len(in_window) / seconds, 1),  # answered OK, per second
        "ops": len(ops),
        "swaps_observed": len(delays),
        "gap_p50": round(float(np.percentile(delays, 50)), 2) if delays else None,
        "gap_p99": round(float(np.percentile(delays, 99)), 2) if delays else None,
        "gap_max": round(max(delays), 2) if delays else None,
        "link_p50": round(float(np.percentile(from_link, 50)), 2) if from_link else None,
        "link_p99": round(float(np.percentile(from_link, 99)), 2) if from_link else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 ops, 6 restarts")
    parser.add_argument("--ops", type=int, default=None, help="hot-swap ops (default 100; quick 50)")
    parser.add_argument("--restarts", type=int, default=None, help="restart ops (default 20; quick 6)")
    parser.add_argument("--clients", type=int, default=4, help="load threads (default 4)")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between ops")
    args = parser.parse_args()
    n_ops = args.ops or (50 if args.quick else 100)
    n_restarts = args.restarts or (6 if args.quick else 20)
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        home = Path(tmp) / "home"
        with Store.open(home) as store:
            records = add_tiny_candidates(store, MODELS, hidden=64)
            promote(store, "m-a", reason="bench baseline")
        shas = {r.candidate_id: str(r.onnx_sha256) for r in records}
        port = free_port()
        hot_states = [("m-a", shas["m-a"])]
        print(f"hot swap: {n_ops} ops under load on 127.0.0.1:{port} ...", file=sys.stderr)
        hot = analyse(drive(home, port, n_ops, args.clients, False, hot_states, shas, args.pause),
                      hot_states)
        print(f"hot swap: {json.dumps(hot)}", file=sys.stderr, flush=True)  # survives a later failure
        # The rollbacks leave the channel on m-a again: the restart phase starts alike.
        restart_states = [("m-a", shas["m-a"])]
        print(f"restart: {n_restarts} ops, restarting the server after each ...", file=sys.stderr)
        rst = analyse(drive(home, port, n_restarts, args.clients, True, restart_states, shas,
                            args.pause), restart_states)
    result = {
        "requests": hot["requests"], "throughput_rps": hot["throughput_rps"],
        "failed": hot["failed"], "wrong_model": hot["wrong_model"],
        "stale_after_swap": hot["stale_after_swap"], "ops": hot["ops"],
        "swaps_observed": hot["swaps_observed"], "swap_ms_p50": hot["gap_p50"],
        "swap_ms_p99": hot["gap_p99"], "swap_ms_max": hot["gap_max"],
        "link_to_answer_ms_p50": hot["link_p50"], "link_to_answer_ms_p99": hot["link_p99"],
        "restart_ops": rst["ops"], "restart_requests": rst["requests"],
        "restart_failed": rst["failed"], "restart_wrong_model": rst["wrong_model"],
        "restart_throughput_rps": rst["throughput_rps"],
        "restart_gap_ms_p50": rst["gap_p50"], "restart_gap_ms_p99": rst["gap_p99"],
        "clients": args.clients, "quick": args.quick, "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    for key, value in result.items():
        print(f"  {key:24} {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
