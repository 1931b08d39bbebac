"""Leaderboard at scale, and the store under a concurrent writer and promoter.

1. Fill a store with 100,000 candidates x 3 devices (``--quick``: 10,000;
   ``--candidates N``), then time typical queries through the public API
   (``selection.leaderboard.frame``): top 20 eligible on a device, ``--where``
   filters, the Pareto front, ``best_candidate``. Target: each < 100 ms.
2. For 30 s (``--quick``: 8 s) one process writes candidates one transaction
   at a time, like a sweep driver, while another queries the leaderboard and
   promotes (gate evaluated, forced: the fake models carry no holdout rows),
   and the benchmark's own process times the queries of part 1 over and over
   (``concurrent_*``: the figures of a user reading the board meanwhile).
   Counted: lock failures ("database is locked", deadlocks, serialization and
   lock-timeout errors) and rows the writer committed but the store does not hold.

Both run on SQLite (the home's ``shadow.db``) and, with ``--store
postgresql://USER@HOST:PORT/DB``, on that PostgreSQL server too, side by side
in one run: the benchmark creates a fresh database there (``DB`` is only the
one it connects to for that) and drops it afterwards. After the bulk fill
PostgreSQL gets ``VACUUM ANALYZE`` (what autovacuum does by itself within a
minute of a load), so its figures are those of a store in steady state, not
of tables the planner has never seen (``--no-vacuum``: straight after the
load). SQLite is queried as a user's store is: nothing runs ANALYZE there.

Usage: ``python benchmarks/leaderboard_scale.py [--quick] [--home DIR]
[--store postgresql://postgres@127.0.0.1:5432/test] [--candidates N] [--seconds S]
[--only sqlite|postgresql] [--no-vacuum]``.
The last stdout line is one JSON object: one entry per backend, and the
headline figures (worst query, lock errors, lost rows) over all of them.
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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from selection import CandidateRecord, DeviceResult, HoldoutRecord, Store, SweepRecord, sha256_bytes
from selection.channels.promotion import promote
from selection.gate.decision import evaluate_gate, force_decision
from selection.leaderboard.frame import best_candidate, leaderboard
from selection.store import rows as codec
from selection.store import schema
from selection.store.engine import parse_url

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


def typical_queries(store: Store, sweep_id: str) -> dict[str, Callable[[], Any]]:
    """The queries the targets are about, by name."""
    return {
        "top20_eligible_npu": lambda: leaderboard(store, sweep=sweep_id, device="npu-a", top=20),
        "top20_eligible_all_devices": lambda: leaderboard(store, sweep=sweep_id, top=20),
        "where_latency_top20": lambda: leaderboard(store, sweep=sweep_id, device="npu-a",
                                                   where=["latency_ms < 0.5"], top=20),
        "where_filter_full_rank": lambda: leaderboard(
            store, sweep=sweep_id, device="npu-a", where=["latency_ms < 0.3", "accuracy >= 0.8"]),
        "pareto_front_npu": lambda: leaderboard(store, sweep=sweep_id, device="npu-a", pareto=True),
        "best_candidate": lambda: best_candidate(store, sweep=sweep_id, device="npu-a"),
    }


def time_queries(store: Store, sweep_id: str, repeat: int) -> dict[str, list[float]]:
    """Milliseconds per call of each typical query."""
    out: dict[str, list[float]] = {}
    for name, query in typical_queries(store, sweep_id).items():
        query()  # warm the page cache and SQLAlchemy's statement cache
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            query()
            times.append((time.perf_counter() - start) * 1000)
        out[name] = times
    return out


#: What a lock failure says on each backend (SQLite's busy wait ran out; PostgreSQL's
#: deadlock detector, a serialization failure under stricter isolation, a lock timeout).
LOCK_MESSAGES = ("database is locked", "database table is locked", "deadlock detected",
                 "could not serialize access", "lock timeout", "could not obtain lock")


def _is_lock(exc: BaseException) -> bool:
    return any(m in str(exc) for m in LOCK_MESSAGES)


def _error_kind(exc: BaseException) -> str:
    return type(exc).__name__


def _error_text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def writer(home: str, url: str | None, seconds: float, queue: Any, ready: Any) -> None:
    """A sweep-like driver: one candidate per transaction, as fast as it can."""
    store = Store.open(home, url=url)
    _sweep(store, "s-live")
    rng = np.random.default_rng(1)
    stored, locks, errors, i = 0, 0, 0, 0
    seen: dict[str, str] = {}  # one message per kind of error: what went wrong, not just how often
    # One row before the start: the promoter's top 20 of the latest sweep (this one) has a
    # board to read from its first query (an empty sweep is "no leaderboard row", not a result).
    store.add_candidate(_candidate(rng, "s-live", i), {MODEL_SHA: MODEL})
    stored, i = 1, 1
    ready.wait()  # all three warmed up (a barrier of three): they start together
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            store.add_candidate(_candidate(rng, "s-live", i), {MODEL_SHA: MODEL})
            stored += 1
        except Exception as exc:  # counted, not raised: the benchmark reports them
            locks += _is_lock(exc)
            errors += not _is_lock(exc)
            seen.setdefault(_error_kind(exc), _error_text(exc))
        i += 1
    queue.put({"role": "writer", "stored": stored, "lock_errors": locks, "other_errors": errors,
               "errors_seen": seen})


def promoter(home: str, url: str | None, seconds: float, queue: Any, ready: Any) -> None:
    """Queries the board and promotes (gate evaluated, then forced) while the writer runs."""
    store = Store.open(home, url=url)
    queries, promotions, locks, errors = 0, 0, 0, 0
    seen: dict[str, str] = {}
    ids = list(leaderboard(store, sweep="s-big", device="npu-a", top=50)["candidate_id"])
    ready.wait()  # all three warmed up (a barrier of three): they start together
    end = time.monotonic() + seconds
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
            seen.setdefault(_error_kind(exc), _error_text(exc))
    queue.put({"role": "promoter", "queries": queries, "promotions": promotions,
               "lock_errors": locks, "other_errors": errors, "errors_seen": seen})


def concurrency(home: str, url: str | None, seconds: float) -> dict[str, Any]:
    """The writer and the promoter for ``seconds``, while this process times the typical
    queries over and over (a user reading the board while a sweep writes and a controller
    promotes): their figures, and what the store holds afterwards."""
    ctx = mp.get_context("spawn")
    # A barrier of three: each child passes it once imported, opened and warmed (spawn imports
    # take seconds), this process once its queries are warm, so the timed window has all three.
    queue, ready = ctx.Queue(), ctx.Barrier(3, timeout=300)
    procs = [ctx.Process(target=writer, args=(home, url, seconds, queue, ready)),
             ctx.Process(target=promoter, args=(home, url, seconds, queue, ready))]
    for p in procs:
        p.start()
    under_load: dict[str, list[float]] = {}
    try:
        with Store.open(home, url=url) as store:
            queries = typical_queries(store, "s-big")
            for query in queries.values():
                query()  # warm, as time_queries does
            ready.wait()  # the children are warm too: all three go
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for name, query in queries.items():
                    start = time.perf_counter()
                    query()
                    under_load.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        results = {r["role"]: r for r in (queue.get(timeout=seconds + 300) for _ in procs)}
    finally:  # a query that raised, or a child that never came: no child left running
        for p in procs:
            p.join(timeout=30)  # after their results they exit at once
            if p.is_alive():
                p.terminate()
                p.join()
    with Store.open(home, url=url) as store:
        in_db = len(store.candidate_ids("s-live"))
        with store.snapshot() as conn:
            metrics = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM device_metrics WHERE sweep_id = 's-live'").scalar_one()
            history = conn.exec_driver_sql("SELECT COUNT(*) FROM promotions").scalar_one()
    committed = results["writer"]["stored"]
    return {"writer": results["writer"], "promoter": results["promoter"],
            "candidates_in_db": in_db, "metrics_in_db": int(metrics),
            "lost_rows": (committed - in_db) + (committed * len(DEVICES) - int(metrics)),
            # every promotion the promoter saw succeed is one history row, no more, no fewer
            "lost_promotions": results["promoter"]["promotions"] - int(history),
            "query_ms": under_load}


def maintain(url: str | None) -> None:
    """What a PostgreSQL server does by itself after a bulk load (autovacuum): VACUUM ANALYZE.

    Without it the planner has no statistics for the new rows and index-only
    scans still visit the heap (the visibility map is empty). SQLite is left
    as a user's store is: nothing in the product runs ANALYZE there.
    """
    if url is None:
        return
    from sqlalchemy import create_engine

    engine = create_engine(parse_url(url), isolation_level="AUTOCOMMIT")  # VACUUM: no transaction
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, uniquely named database on ``server``'s PostgreSQL, dropped afterwards."""
    from sqlalchemy import create_engine

    admin_url = parse_url(server)
    name = f"shadow_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run_backend(home: str, url: str | None, n: int, seconds: float, repeat: int,
                vacuum: bool = True) -> dict[str, Any]:
    """Fill, time the queries and run the writer + promoter on one store: its figures."""
    with Store.open(home, url=url) as store:
        backend = "postgresql" if store.url.startswith("postgresql") else "sqlite"
        fill_s = fill(store, "s-big", n)
        start = time.perf_counter()
        if vacuum:
            maintain(url)
        maintain_s = time.perf_counter() - start
        print(f"[{backend}] filled {n} candidates x {len(DEVICES)} devices in {fill_s:.1f} s "
              f"(+{maintain_s:.1f} s maintenance)", file=sys.stderr)
        timings = time_queries(store, "s-big", repeat)
    for name, times in timings.items():
        print(f"[{backend}] {name:30s} p50 {statistics.median(times):7.1f} ms  "
              f"max {max(times):7.1f} ms", file=sys.stderr)
    conc = concurrency(home, url, seconds)
    under_load = conc.pop("query_ms")
    print(json.dumps(conc, indent=1), file=sys.stderr)
    for name, times in under_load.items():
        print(f"[{backend}] concurrent {name:26s} p50 {statistics.median(times):7.1f} ms  "
              f"max {max(times):7.1f} ms  ({len(times)} calls)", file=sys.stderr)
    every = [t for times in timings.values() for t in times]
    loaded = [t for times in under_load.values() for t in times]
    return {
        "backend": backend, "fill_s": round(fill_s, 2), "maintenance_s": round(maintain_s, 2),
        "vacuumed": vacuum and url is not None,
        "query_ms_p50": round(statistics.median(every), 2), "query_ms_max": round(max(every), 2),
        "slowest_query": max(timings, key=lambda k: statistics.median(timings[k])),
        "per_query_ms_p50": {k: round(statistics.median(v), 2) for k, v in timings.items()},
        "per_query_ms_max": {k: round(max(v), 2) for k, v in timings.items()},
        # The same queries while the writer and the promoter run (they share the machine).
        "concurrent_query_ms_p50": round(statistics.median(loaded), 2),
        "concurrent_query_ms_max": round(max(loaded), 2),
        "concurrent_per_query_ms_p50": {k: round(statistics.median(v), 2) for k, v in under_load.items()},
        "concurrent_per_query_ms_max": {k: round(max(v), 2) for k, v in under_load.items()},
        "writer_rows": conc["writer"]["stored"],
        "promotions": conc["promoter"]["promotions"], "queries": conc["promoter"]["queries"],
        "lock_errors": conc["writer"]["lock_errors"] + conc["promoter"]["lock_errors"],
        "other_errors": conc["writer"]["other_errors"] + conc["promoter"]["other_errors"],
        "errors_seen": {**conc["writer"]["errors_seen"], **conc["promoter"]["errors_seen"]},
        "lost_rows": conc["lost_rows"], "lost_promotions": conc["lost_promotions"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 candidates, 8 s of concurrency")
    parser.add_argument("--home", default=None, help="where to build the stores (default: a temp dir)")
    parser.add_argument("--store", default=None, metavar="URL",
                        help="a PostgreSQL server (postgresql://USER@HOST:PORT/DB) to run on too; "
                             "a fresh database is created there and dropped afterwards")
    parser.add_argument("--candidates", type=int, default=None, metavar="N",
                        help="candidates to fill (default 100,000; --quick 10,000)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds of concurrent writer + promoter (default 30; --quick 8)")
    parser.add_argument("--no-vacuum", action="store_true",
                        help="query PostgreSQL straight after the fill, before autovacuum has run")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None,
                        help="run one backend only (postgresql needs --store)")
    args = parser.parse_args(argv)
    n, seconds, repeat = (10_000, 8.0, 5) if args.quick else (100_000, 30.0, 7)
    n = args.candidates or n
    seconds = args.seconds if args.seconds is not None else seconds
    if args.only == "postgresql" and not args.store:
        parser.error("--only postgresql needs --store postgresql://...")
    if args.store and not parse_url(args.store).get_backend_name() == "postgresql":
        parser.error(f"--store must name a PostgreSQL server (postgresql://...); got {args.store!r}")
    root = args.home or tempfile.mkdtemp(prefix="shadow-bench-")
    results: dict[str, dict[str, Any]] = {}
    try:
        if args.only in (None, "sqlite"):
            results["sqlite"] = run_backend(str(Path(root) / "sqlite"), None, n, seconds, repeat)
        if args.store and args.only in (None, "postgresql"):
            with fresh_database(args.store) as url:
                # Artifacts stay in a home of its own; the metadata goes to the fresh database.
                results["postgresql"] = run_backend(str(Path(root) / "postgresql"), url, n,
                                                    seconds, repeat, vacuum=not args.no_vacuum)
    finally:
        if args.home is None:  # a 100,000-candidate store is ~150 MB: do not leave it in /tmp
            shutil.rmtree(root, ignore_errors=True)
    each = list(results.values())
    summary = {
        "backends": list(results), "candidates": n, "devices": len(DEVICES), "concurrent_s": seconds,
        # Headline: the worst over the backends run (what the targets are judged on).
        "query_ms_p50": max(r["query_ms_p50"] for r in each),
        "query_ms_max": max(r["query_ms_max"] for r in each),
        "concurrent_query_ms_max": max(r["concurrent_query_ms_max"] for r in each),
        "lock_errors": sum(r["lock_errors"] for r in each),
        "other_errors": sum(r["other_errors"] for r in each),
        "lost_rows": sum(r["lost_rows"] + r["lost_promotions"] for r in each),
        **results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
