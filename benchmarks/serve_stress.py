"""``shadow serve`` under load, slow clients and malformed requests, end to end.

Starts the real CLI (``python -m shadow serve``) on a free loopback port over
a temp home holding one tiny real ONNX model (``selection.testing``:
no Ray, no torch), then, per repeat:

1. load: ``--clients`` threads (default 200, spread over 4 processes so the
   load generator's own GIL does not pass for server latency) open their
   keep-alive connections at the same moment (the burst the listen backlog
   must absorb) and each sends ``--requests`` one-row ``POST /predict``
   requests closed-loop. ``failed_requests``: requests that raised (reset,
   refused, timeout) or got another status than 200. ``p99_ms``: 99th
   percentile of the answered requests' latency; ``steady_p99_ms`` leaves
   out each connection's first request, ``first_request_p99_ms`` is those
   alone (they also wait for the server to accept the connection and start
   its thread, which the GIL slows while 200 others are being served).
2. slow clients: ``--slow`` connections that stall (a quarter each: half the
   headers then silence; headers and part of the body; connect and send
   nothing; one header byte every 0.25 s), while 20 normal clients keep
   asking. ``slow_clients_held``: slow connections still open
   ``max(idle, request timeout) + grace`` after they started (target 0);
   ``slow_phase_failed`` / ``slow_phase_p99_ms``: the normal clients meanwhile.

Then once: every request of ``selection.runtime.http_checks.cases()`` on a raw
socket. ``fuzz_wrong``: cases answered with another status than the table's,
with a body that is not strict JSON, leaving the keep-alive connection out of
sync, or after which the server no longer answers (target 0).

Bounded: every count is fixed, every wait has a deadline (a stuck client
gives up after 30 s). Loopback only. Last stdout line: one JSON object with
``clients``, ``failed_requests``, ``p99_ms``, ``slow_clients_held``,
``fuzz_cases``, ``fuzz_wrong`` and their spread over repeats (``*_spread``:
[min, max]); also written to ``benchmarks/results/serve_stress[.quick].json``.
``--quick``: 200 clients x 10 requests, 60 slow clients, 1 s timeouts, 2 repeats.
A shared 2-core machine makes latencies noisy: ``load_avg_1m`` is reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
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

from selection import Store, promote  # noqa: E402
from selection.runtime.http_checks import cases, check_case  # noqa: E402
from selection.testing import FEATURES, add_tiny_candidates  # noqa: E402

BODY = json.dumps({"rows": [[0.25] * len(FEATURES)]}).encode()
ENV = {**os.environ, "SHADOW_STORE": ""}
GRACE_S = 1.5  # the server lingers up to 0.5 s before closing; a busy machine adds the rest
CLIENT_GIVE_UP_S = 30.0
LOAD_PROCESSES = 4  # clients are threads spread over these processes
SLOW_KINDS = {
    "half_header": b"POST /predict HTTP/1.1\r\nHost: slow\r\n",
    "short_body": b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Length: 400\r\n\r\n{\"rows\"",
    "idle": b"",
    "trickle": b"P",  # then one more header byte every 0.25 s
}
TRICKLE = b"OST /predict HTTP/1.1\r\nHost: slow\r\nX-Pad: " + b"a" * 4000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, port: int, idle_s: float, request_s: float
                 ) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", str(port),
         "--no-reload", "--idle-timeout", str(idle_s), "--request-timeout", str(request_s)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if " on http://" not in first:
        proc.kill()
        raise SystemExit(f"shadow serve did not start: {first}{proc.stderr.read()}")
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


def load_part(port: int, clients: int, requests: int | None, seconds: float | None,
              start_at: float) -> dict[str, Any]:
    """One load process: ``clients`` threads that all connect at ``start_at`` (monotonic)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    firsts: list[float] = []  # each connection's first answer also waits for its accept
    failures: list[int] = [0] * clients
    errors: dict[str, int] = {}

    def client(k: int) -> None:
        conn: http.client.HTTPConnection | None = None
        time.sleep(max(0.0, start_at - time.monotonic()))
        give_up = time.monotonic() + CLIENT_GIVE_UP_S + (seconds or 0)
        stop = time.monotonic() + seconds if seconds is not None else None
        for _ in range(requests if requests is not None else 10**9):
            now = time.monotonic()
            if (stop is not None and now > stop) or now > give_up:
                break
            try:
                fresh = conn is None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.connect()
                sent = time.monotonic()
                conn.request("POST", "/predict", body=BODY)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                ms = (time.monotonic() - sent) * 1000
                (firsts if fresh else latencies[k]).append(ms)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                failures[k] += 1
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, start_at - time.monotonic()) + CLIENT_GIVE_UP_S
                    + (seconds or 0) + 10)
    return {"latencies": [x for mine in latencies for x in mine], "firsts": firsts, "failed": sum(failures),
            "errors": errors, "stuck": sum(thread.is_alive() for thread in threads),
            "wall": time.monotonic() - start_at}


def load(pool: Any, port: int, clients: int, requests: int | None,
         seconds: float | None = None) -> dict[str, Any]:
    """Closed-loop keep-alive load from the pool's processes (one GIL per few dozen clients,
    so the load generator's own contention does not pass for server latency)."""
    n = LOAD_PROCESSES
    shares = [clients // n + (1 if i < clients % n else 0) for i in range(n)]
    start_at = time.monotonic() + 1.0  # every process has its threads waiting by then
    parts = pool.starmap(load_part, [(port, k, requests, seconds, start_at)
                                     for k in shares if k])
    steady = sorted(x for part in parts for x in part["latencies"])
    firsts = sorted(x for part in parts for x in part["firsts"])
    answered = sorted(steady + firsts)
    errors: dict[str, int] = {}
    for part in parts:
        for name, count in part["errors"].items():
            errors[name] = errors.get(name, 0) + count
    failed = sum(part["failed"] for part in parts)
    wall = max(part["wall"] for part in parts)
    return {
        "requests": len(answered) + failed,
        "failed": failed,
        "errors": errors,
        "p50_ms": round(answered[len(answered) // 2], 2) if answered else None,
        "p99_ms": _p99(answered),
        "steady_p99_ms": _p99(steady),
        "first_request_p99_ms": _p99(firsts),
        "throughput_rps": round(len(answered) / wall, 1) if wall > 0 else None,
        "stuck_clients": sum(part["stuck"] for part in parts),
    }


def _p99(ordered: list[float]) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2) if ordered else None


def slow_clients(pool: Any, port: int, n: int, idle_s: float, request_s: float) -> dict[str, Any]:
    """Open ``n`` stalling connections, serve normal clients meanwhile, count who is still open."""
    kinds = list(SLOW_KINDS)
    socks: list[tuple[str, socket.socket]] = []
    started = time.monotonic()
    for i in range(n):
        kind = kinds[i % len(kinds)]
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if SLOW_KINDS[kind]:
            sock.sendall(SLOW_KINDS[kind])
        socks.append((kind, sock))
    check_at = started + max(idle_s, request_s) + GRACE_S
    stop_trickle = threading.Event()

    def trickle() -> None:
        for i in range(len(TRICKLE)):
            if stop_trickle.wait(0.25):
                return
            for kind, sock in socks:
                if kind == "trickle":
                    try:
                        sock.send(TRICKLE[i:i + 1])
                    except OSError:
                        pass  # closed by the server: what we want

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    during = load(pool, port, 20, None, seconds=max(0.5, check_at - time.monotonic() - 1.0))
    time.sleep(max(0.0, check_at - time.monotonic()))
    stop_trickle.set()
    trickler.join(timeout=5)
    held: dict[str, int] = {}
    answers: dict[str, int] = {}
    for kind, sock in socks:
        closed, data = _closed(sock)
        if not closed:
            held[kind] = held.get(kind, 0) + 1
        status = data.split(b" ", 2)[1].decode("latin-1", "replace") if data[:5] == b"HTTP/" else "none"
        answers[f"{kind}:{status}"] = answers.get(f"{kind}:{status}", 0) + 1
        sock.close()
    return {
        "slow_clients": n,
        "held": sum(held.values()),
        "held_by_kind": held,
        "answers": answers,
        "checked_after_s": round(time.monotonic() - started, 2),
        "during": during,
    }


def _closed(sock: socket.socket) -> tuple[bool, bytes]:
    """Whether the server has closed ``sock`` (EOF or reset), reading what it sent first."""
    data = b""
    sock.setblocking(False)
    for _ in range(64):
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return False, data
        except OSError:  # reset
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


def fuzz(port: int) -> dict[str, Any]:
    table = cases(len(FEATURES), FEATURES)
    wrong = {}
    for case in table:
        problem = check_case("127.0.0.1", port, case, timeout=10)
        if problem:
            wrong[case.name] = problem[:200]
    return {"cases": len(table), "wrong": len(wrong), "wrong_cases": wrong}


def spread(values: list[Any]) -> list[Any]:
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else [None, None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 clients x 10 requests, 60 slow clients, 1 s timeouts, 2 repeats")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per client (default 50; quick 10)")
    parser.add_argument("--slow", type=int, default=None, help="slow clients (default 150; quick 60)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="--idle-timeout and --request-timeout of the server (default 2; quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats (default 3; quick 2)")
    args = parser.parse_args()
    requests = args.requests or (10 if args.quick else 50)
    n_slow = args.slow or (60 if args.quick else 150)
    timeout_s = args.timeout or (1.0 if args.quick else 2.0)
    repeats = args.repeats or (2 if args.quick else 3)
    levels = [args.clients] if args.quick else sorted({20, 50, args.clients})
    runs: list[dict[str, Any]] = []
    by_clients: dict[int, list[dict[str, Any]]] = {n: [] for n in levels}
    with tempfile.TemporaryDirectory(prefix="shadow-stress-") as tmp:
        home = Path(tmp) / "home"
        with Store.open(home) as store:
            add_tiny_candidates(store, ["m-a"], hidden=64)
            promote(store, "m-a", reason="bench baseline")
        port = free_port()
        proc, lines = start_server(home, port, timeout_s, timeout_s)
        pool = mp.get_context("spawn").Pool(LOAD_PROCESSES)
        try:
            pool.map(abs, range(LOAD_PROCESSES * 4))  # workers started before anything is timed
            for r in range(repeats):
                for n in levels:
                    by_clients[n].append(load(pool, port, n, requests))
                    print(f"repeat {r + 1}: {n} clients: {json.dumps(by_clients[n][-1])}",
                          file=sys.stderr, flush=True)
                slow = slow_clients(pool, port, n_slow, timeout_s, timeout_s)
                print(f"repeat {r + 1}: slow: {json.dumps(slow)}", file=sys.stderr, flush=True)
                runs.append({"load": by_clients[args.clients][-1], "slow": slow})
            fuzzed = fuzz(port)
            print(f"fuzz: {json.dumps(fuzzed)}", file=sys.stderr, flush=True)
        finally:
            pool.terminate()
            pool.join()
            stop_server(proc)
    tracebacks = sum("Traceback" in line for line in lines)
    p99s = [run["load"]["p99_ms"] for run in runs]
    held = [run["slow"]["held"] for run in runs]
    result = {
        "clients": args.clients,
        "requests_per_client": requests,
        "failed_requests": sum(run["load"]["failed"] for run in runs),
        "failed_requests_spread": spread([run["load"]["failed"] for run in runs]),
        "p99_ms": statistics.median(p99s) if None not in p99s else None,
        "p99_ms_spread": spread(p99s),
        "steady_p99_ms": statistics.median([run["load"]["steady_p99_ms"] or 0 for run in runs]),
        "first_request_p99_ms": statistics.median([run["load"]["first_request_p99_ms"] or 0
                                                   for run in runs]),
        "p50_ms": statistics.median([run["load"]["p50_ms"] or 0 for run in runs]),
        "throughput_rps": statistics.median([run["load"]["throughput_rps"] for run in runs]),
        "slow_clients": n_slow,
        "slow_clients_held": max(held),
        "slow_clients_held_spread": spread(held),
        "slow_phase_failed": sum(run["slow"]["during"]["failed"] for run in runs),
        "slow_phase_p99_ms": statistics.median([run["slow"]["during"]["p99_ms"] or 0
                                                for run in runs]),
        "fuzz_cases": fuzzed["cases"],
        "fuzz_wrong": fuzzed["wrong"],
        "fuzz_wrong_cases": fuzzed["wrong_cases"],
        "server_tracebacks": tracebacks,
        "by_clients": {str(n): {"failed": sum(x["failed"] for x in rs),
                                "p99_ms_spread": spread([x["p99_ms"] for x in rs])}
                       for n, rs in by_clients.items()},
        "idle_timeout_s": timeout_s, "request_timeout_s": timeout_s, "grace_s": GRACE_S,
        "repeats": repeats, "quick": args.quick, "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    out = REPO / "benchmarks" / "results" / f"serve_stress{'.quick' if args.quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"  {key:26} {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
