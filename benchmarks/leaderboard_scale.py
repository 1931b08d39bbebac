"""Leaderboard at scale, and the store under a concurrent writer and promoter.

1. Fill a SQLite store with 100,000 candidates x 3 devices (``--quick``:
   10,000), then time typical queries through the public API
   (``selection.leaderboard.frame``): top 20 eligible on a device, ``--where``
   filters, the Pareto front, ``best_candidate``. Target: each < 100 ms.
2. For 30 s (``--quick``: 8 s) one process writes candidates one transaction
   at a time, like a sweep driver, while another queries the leaderboard and
   promotes (gate evaluated, forced: the fake models carry no holdout rows).
   Counted: "database is locked" failures and rows the writer committed but
   the store does not hold.

Usage: ``python benchmarks/leaderboard_scale.py [--quick] [--home DIR]``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

from selection import CandidateRecord, DeviceResult, HoldoutRecord, Store, SweepRecord, sha256_bytes
from selection.channels.promotion import promote
from selection.gate.decision import evaluate_gate, force_decision
from selection.leaderboard.frame import best_candidate, leaderboard
from selection.store import rows as codec
from selection.store import schema

DEVICES = ("host-cpu", "npu-a", "npu-b")
MODEL = b"\x08\x09benchmark-model"
MODEL_SHA = sha256_bytes(MODEL)


def _sweep(store: Store, sweep_id: str) -> None:
    store.create_sweep(SweepRecord(sweep_id, sweep_id, "synthetic", "fp", HoldoutRecord(0, 100, "a" * 64),
                                   {"sweep": {"devices": list(DEVICES)}}, 0), [])


def _candidate(rng: np.random.Generator, sweep_id: str, i: int) -> CandidateRecord:
    width = int(rng.choice([8, 16, 32, 64, 128]))
    base = float(np.clip(rng.normal(0.6 + 0.03 * np.log2(width), 0.06), 0, 1))
    size = width * 600 + int(rng.integers(0, 500))
    results = []
    for d, device in enumerate(DEVICES):
        extra: dict[str, Any] = {}
        if device != "host-cpu":
            budget = 2_000_000
            extra = {"has_fallback": bool(rng.random() < 0.05), "cpu_fallback_ops": [],
                     "peak_activation_bytes": int(width * 20_000 * rng.uniform(0.5, 1.1)),
                     "memory_budget_bytes": budget, "eligible": bool(rng.random() > 0.02),
                     "ineligible_reason": None, "numerics": "a8w8"}
        latency = float(0.05 + width * 0.01 * (1 + d) * rng.uniform(0.8, 1.2))
        results.append(DeviceResult(device, "ok", accuracy=float(np.clip(base - 0.01 * d, 0, 1)),
                                    latency_ms=latency, size_bytes=size, artifact_sha256=MODEL_SHA,
                                    extra=extra))
    return CandidateRecord(f"c-{sweep_id}-{i:07d}", sweep_id, f"slice-{i % 7}", "mlp",
                           {"width": width, "i": i}, i, "ok", onnx_sha256=MODEL_SHA,
                           lineage={}, devices=tuple(results))


def fill(store: Store, sweep_id: str, n: int, seed: int = 0) -> float:
    """Bulk-insert ``n`` candidates (rows built by the store's own codec); returns seconds."""
    start = time.perf_counter()
    _sweep(store, sweep_id)
    store.artifacts.put(MODEL)
    rng = np.random.default_rng(seed)
    for lo in range(0, n, 5000):
        batch = [_candidate(rng, sweep_id, i) for i in range(lo, min(n, lo + 5000))]
        with store.transaction() as conn:
            conn.execute(schema.candidates.insert(), [codec.candidate_to_row(c) for c in batch])
            conn.execute(schema.device_metrics.insert(), [r for c in batch for r in codec.device_rows(c)])
    return time.perf_counter() - start


def time_queries(store: Store, sweep_id: str, repeat: int) -> dict[str, list[float]]:
    """Milliseconds per call of each typical query."""
    queries = {
        "top20_eligible_npu": lambda: leaderboard(store, sweep=sweep_id, device="npu-a", top=20),
        "top20_eligible_all_devices": lambda: leaderboard(store, sweep=sweep_id, top=20),
        "where_latency_top20": lambda: leaderboard(store, sweep=sweep_id, device="npu-a",
                                                   where=["latency_ms < 0.5"], top=20),
        "where_filter_full_rank": lambda: leaderboard(
            store, sweep=sweep_id, device="npu-a", where=["latency_ms < 0.3", "accuracy >= 0.8"]),
        "pareto_front_npu": lambda: leaderboard(store, sweep=sweep_id, device="npu-a", pareto=True),
        "best_candidate": lambda: best_candidate(store, sweep=sweep_id, device="npu-a"),
    }
    out: dict[str, list[float]] = {}
    for name, query in queries.items():
        query()  # warm the page cache and SQLAlchemy's statement cache
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            query()
            times.append((time.perf_counter() - start) * 1000)
        out[name] = times
    return out


def _is_lock(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def writer(home: str, seconds: float, queue: Any) -> None:
    """A sweep-like driver: one candidate per transaction, as fast as it can."""
    store = Store.open(home)
    _sweep(store, "s-live")
    rng = np.random.default_rng(1)
    stored, locks, errors, i = 0, 0, 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            store.add_candidate(_candidate(rng, "s-live", i), {MODEL_SHA: MODEL})
            stored += 1
        except Exception as exc:  # counted, not raised: the benchmark reports them
            locks += _is_lock(exc)
            errors += not _is_lock(exc)
        i += 1
    queue.put({"role": "writer", "stored": stored, "lock_errors": locks, "other_errors": errors})


def promoter(home: str, seconds: float, queue: Any) -> None:
    """Queries the board and promotes (gate evaluated, then forced) while the writer runs."""
    store = Store.open(home)
    queries, promotions, locks, errors = 0, 0, 0, 0
    end = time.monotonic() + seconds
    ids = list(leaderboard(store, sweep="s-big", device="npu-a", top=50)["candidate_id"])
    k = 0
    while time.monotonic() < end:
        try:
            leaderboard(store, sweep="latest", device="npu-a", top=20)
            leaderboard(store, sweep="s-big", device="npu-a", where=["latency_ms < 0.5"], top=20)
            queries += 2
            cid = ids[k % len(ids)]
            k += 1
            decision = evaluate_gate(store, cid, device="npu-a")
            promote(store, cid, device="npu-a", reason="benchmark",
                    decision=force_decision(decision, "benchmark: fake models have no holdout"))
            promotions += 1
        except Exception as exc:
            locks += _is_lock(exc)
            errors += not _is_lock(exc)
    queue.put({"role": "promoter", "queries": queries, "promotions": promotions,
               "lock_errors": locks, "other_errors": errors})


def concurrency(home: str, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=writer, args=(home, seconds, queue)),
             ctx.Process(target=promoter, args=(home, seconds, queue))]
    for p in procs:
        p.start()
    results = {r["role"]: r for r in (queue.get(timeout=seconds + 120) for _ in procs)}
    for p in procs:
        p.join()
    with Store.open(home) as store:
        in_db = len(store.candidate_ids("s-live"))
        with store.snapshot() as conn:
            metrics = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM device_metrics WHERE sweep_id = 's-live'").scalar_one()
    committed = results["writer"]["stored"]
    return {"writer": results["writer"], "promoter": results["promoter"],
            "candidates_in_db": in_db, "metrics_in_db": int(metrics),
            "lost_rows": (committed - in_db) + (committed * len(DEVICES) - int(metrics))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 candidates, 8 s of concurrency")
    parser.add_argument("--home", default=None, help="where to build the store (default: a temp dir)")
    args = parser.parse_args(argv)
    n, seconds, repeat = (10_000, 8.0, 5) if args.quick else (100_000, 30.0, 7)
    home = args.home or tempfile.mkdtemp(prefix="shadow-bench-")
    with Store.open(home) as store:
        fill_s = fill(store, "s-big", n)
        print(f"filled {n} candidates x {len(DEVICES)} devices in {fill_s:.1f} s", file=sys.stderr)
        timings = time_queries(store, "s-big", repeat)
    for name, times in timings.items():
        print(f"{name:30s} p50 {statistics.median(times):7.1f} ms  max {max(times):7.1f} ms",
              file=sys.stderr)
    conc = concurrency(home, seconds)
    print(json.dumps(conc, indent=1), file=sys.stderr)
    every = [t for times in timings.values() for t in times]
    summary = {
        "backend": "sqlite", "candidates": n, "devices": len(DEVICES), "fill_s": round(fill_s, 2),
        "query_ms_p50": round(statistics.median(every), 2), "query_ms_max": round(max(every), 2),
        "per_query_ms_p50": {k: round(statistics.median(v), 2) for k, v in timings.items()},
        "per_query_ms_max": {k: round(max(v), 2) for k, v in timings.items()},
        "concurrent_s": seconds, "writer_rows": conc["writer"]["stored"],
        "promotions": conc["promoter"]["promotions"], "queries": conc["promoter"]["queries"],
        "lock_errors": conc["writer"]["lock_errors"] + conc["promoter"]["lock_errors"],
        "other_errors": conc["writer"]["other_errors"] + conc["promoter"]["other_errors"],
        "lost_rows": conc["lost_rows"],
    }
    if args.home is None:  # a 100,000-candidate store is ~150 MB: do not leave it in /tmp
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
