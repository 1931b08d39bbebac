"""How well does a shadow sweep use the cluster, and how does it compare with Ray Tune?

In one process and one run, on the real NOAA data:

1. **serial**: the same candidates run one after another in the driver
   (``run_candidate`` called directly: train, export, verify, evaluate).
2. **ours**: the same candidates as a shadow sweep on a local Ray (a private
   store in a temp dir, results written as they land). ``speedup`` =
   serial wall / sweep wall. The sweep runs twice: ``cold`` (fresh workers that
   import torch and do their first ONNX export) and ``warm`` (the steady state of
   a long-lived cluster); ``speedup`` reports the warm one, ``speedup_cold`` the other.
3. **overhead**: sweep wall minus the candidates' own compute (measured inside
   each task) spread over the workers, per candidate, as % of a candidate's time.
4. **edge devices**: the demo sweep (``datasets/noaa-weather/sweep.toml``, 14
   candidates) with host-cpu plus 1 and plus 3 emulated phone NPUs, serial and on
   the 2-worker sweep, side by side: what each edge device adds to a candidate
   (quantize + compile + emulate + estimate, its ``device_seconds``) against the
   candidate's training (targets: at most its training time; the 3-device sweep
   keeps a 2-worker speedup >= 1.7 over serial), and how the emulator ran the
   check rows (``emulator_check_modes``: batched, or one row per call).
5. **Ray Tune**: the same number of trials of the same work through
   ``tune.Tuner`` with ``OptunaSearch`` over the same space (slice as a
   categorical), 2 concurrent trials, against our searched sweep of the same
   size: ``tune_ratio`` = Tune wall / our wall.

Usage: ``python benchmarks/sweep_scaling.py [--quick] [--edge-only]``; the last stdout line is
one JSON object. Timings on a shared machine are noisy: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
warnings.filterwarnings("ignore")

from selection.store import Store  # noqa: E402
from shadow.sweep import config_from_dict, prepare_sweep, run_sweep  # noqa: E402
from shadow.sweep.cluster import init_local_ray  # noqa: E402
from shadow.sweep.runner import sweep_data  # noqa: E402
from shadow.sweep.search import SearchPlanner  # noqa: E402
from shadow.sweep.task import run_candidate  # noqa: E402

WORKERS = 2
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "datasets" / "noaa-weather" / "sweep.toml"
#: The edge device sets compared (host-cpu always runs beside them).
EDGE_SETS = {"edge1": ["snapdragon-8-gen-2-htp"],
             "edge3": ["snapdragon-8-gen-2-htp", "snapdragon-8-gen-3-htp", "snapdragon-8-elite-htp"]}


def demo_config(edge: list[str]) -> dict[str, Any]:
    """The demo sweep file, on host-cpu plus ``edge``."""
    import tomllib

    raw = tomllib.loads(DEMO_CONFIG.read_text())
    raw["sweep"]["devices"] = ["host-cpu", *edge]
    return raw


def serial_records(raw: dict[str, Any]) -> tuple[float, list[Any]]:
    """Serial wall time of every candidate and their records (after one warm-up candidate)."""
    prepared = prepare_sweep(config_from_dict(raw))
    data = sweep_data(prepared)
    run_candidate(prepared.candidates[0], data)
    started = time.perf_counter()
    records = [run_candidate(spec, data).record for spec in prepared.candidates]
    return time.perf_counter() - started, records


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def edge_serial() -> dict[str, Any]:
    """Per edge set: serial wall and what each edge device added to each candidate vs its training."""
    out: dict[str, Any] = {}
    for label, edge in EDGE_SETS.items():
        wall, records = serial_records(demo_config(edge))
        ok = [r for r in records if r.status == "ok"]
        train = [r.train_seconds for r in ok]
        device = {name: [r.device(name).extra["device_seconds"] for r in ok] for name in edge}
        ratios = [d / t for name in edge for d, t in zip(device[name], train)]
        out[label] = {
            "candidates": len(records), "ok": len(ok), "serial_s": round(wall, 2),
            "train_s": _spread(train),
            "edge_device_s": {name: _spread(v) for name, v in device.items()},
            # Per (candidate, edge device): its device time over the candidate's training time.
            "device_over_train": _spread(ratios),
            "target_device_le_train": max(ratios) <= 1.0,
            # How the emulator ran the check rows: "batched" (bit-identical to one row per call on 8 sampled rows,
            # cross-checked) or "per-row" (what it falls back to).
            "emulator_check_modes": dict(Counter(r.device(name).extra.get("emulator_check_mode")
                                                 for r in ok for name in edge)),
        }
    return out


def edge_sweeps(serial_part: dict[str, Any], home: Path) -> None:
    """The same edge sets as sweeps on the workers, beside their serial walls."""
    for label, edge in EDGE_SETS.items():
        timed_sweep(demo_config(edge), home)  # cold workers: torch, the exporter, the QNN plugin
        wall, _ = timed_sweep(demo_config(edge), home)
        part = serial_part[label]
        part["sweep_s"] = round(wall, 2)
        part["speedup"] = round(part["serial_s"] / wall, 3)
    serial_part["edge3"]["target_speedup_ge_1_7"] = serial_part["edge3"]["speedup"] >= 1.7


def grid_config(windows: int, epochs: int) -> dict[str, Any]:
    return {
        "sweep": {"dataset": "noaa-weather", "seed": 0},
        "holdout": {"rows": 1095},
        "slices": [{"strategy": "window", "size": 3000, "stride": 1000, "count": windows}],
        "model": {"family": "mlp", "params": {"width": [16, 32], "epochs": epochs}},
    }


def search_config(trials: int, epochs: int) -> dict[str, Any]:
    return {
        "sweep": {"dataset": "noaa-weather", "seed": 0},
        "holdout": {"rows": 1095},
        "slices": [{"strategy": "recent", "rows": 3000}, {"strategy": "recent", "rows": 6000}],
        "model": {"family": "mlp", "params": {"epochs": epochs}},
        "search": {"trials": trials, "parallel": 2,
                   "space": {"width": {"low": 8, "high": 64},
                             "lr": {"low": 1e-3, "high": 3e-2, "log": True}}},
    }


def timed_sweep(raw: dict[str, Any], home: Path) -> tuple[float, list[float]]:
    """Wall time of a real sweep and each candidate's own compute time."""
    prepared = prepare_sweep(config_from_dict(raw))
    with Store.open(home) as store:
        started = time.perf_counter()
        run_sweep(prepared, store)
        wall = time.perf_counter() - started
        records = store.list_candidates(prepared.sweep_id)
    return wall, [r.lineage["compute_seconds"] for r in records if "compute_seconds" in r.lineage]


def serial(raw: dict[str, Any]) -> tuple[float, int]:
    prepared = prepare_sweep(config_from_dict(raw))
    data = sweep_data(prepared)
    # Warm up like a long-lived worker: torch and the exporter's first call cost seconds once.
    run_candidate(prepared.candidates[0], data)
    started = time.perf_counter()
    for spec in prepared.candidates:
        run_candidate(spec, data)
    return time.perf_counter() - started, len(prepared.candidates)


def tune_wall(raw: dict[str, Any], trials_total: int) -> float:
    """The same searched work through Ray Tune + OptunaSearch; wall seconds."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    config = config_from_dict(raw)
    prepared = prepare_sweep(config)
    data = sweep_data(prepared)
    assert config.search is not None
    planner = SearchPlanner(config.search, prepared.slices, config.family, dict(config.fixed_params or {}),
                            _family(config.family), prepared.sweep_id, prepared.dataset.fingerprint, 0)
    space = dict(config.search.space)
    space["slice_id"] = optuna.distributions.CategoricalDistribution([s.slice_id for s in prepared.slices])

    def trainable(params: dict[str, Any], data: Any = None) -> None:
        searched = {k: v for k, v in params.items() if k != "slice_id"}
        spec = planner.spec_for(params["slice_id"], {**planner.fixed, **searched}, 0)
        record = run_candidate(spec, data).record
        tune.report({"validation_accuracy": record.lineage.get("validation_accuracy", 0.0)})

    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_parameters(trainable, data=data),
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(space=space, metric="validation_accuracy", mode="max", seed=0),
                num_samples=trials_total, max_concurrent_trials=WORKERS,
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        started = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - started


def _family(name: str) -> Any:
    from shadow.models import get_family

    return get_family(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 small candidates (about 2 minutes)")
    parser.add_argument("--edge-only", action="store_true",
                        help="only the edge-device part (the demo sweep with 1 and 3 edge devices)")
    args = parser.parse_args()
    windows, epochs, trials = (8, 6, 8) if args.quick else (12, 12, 12)
    grid = grid_config(windows, epochs)
    logging.getLogger("ray").setLevel(logging.ERROR)
    if args.edge_only:
        edge = edge_serial()
        init_local_ray(num_cpus=WORKERS)
        with tempfile.TemporaryDirectory() as home:
            edge_sweeps(edge, Path(home))
        print(json.dumps({"benchmark": "sweep_scaling", "quick": args.quick, "part": "edge", "workers": WORKERS,
                          "edge": edge, "cpus_on_host": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}))
        return 0

    serial_wall, n = serial(grid)
    edge = edge_serial()
    started = time.perf_counter()
    init_local_ray(num_cpus=WORKERS)
    ray_init_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as home:
        cold_wall, _ = timed_sweep(grid, Path(home))
        warm_wall, compute = timed_sweep(grid, Path(home))
        search = search_config(trials, epochs)
        ours_search_wall, _ = timed_sweep(search, Path(home))
        edge_sweeps(edge, Path(home))
    tune_s = tune_wall(search, trials * 2)

    mean_compute = statistics.fmean(compute)
    ideal = sum(compute) / WORKERS
    overhead_per_candidate = max(0.0, warm_wall - ideal) * WORKERS / len(compute)
    result = {
        "benchmark": "sweep_scaling",
        "quick": args.quick,
        "candidates": n,
        "workers": WORKERS,
        "serial_s": round(serial_wall, 2),
        "sweep_cold_s": round(cold_wall, 2),
        "sweep_warm_s": round(warm_wall, 2),
        "ray_init_s": round(ray_init_s, 2),
        "speedup": round(serial_wall / warm_wall, 3),
        "speedup_cold": round(serial_wall / cold_wall, 3),
        "candidate_compute_s_mean": round(mean_compute, 3),
        "overhead_s_per_candidate": round(overhead_per_candidate, 3),
        "overhead_pct": round(100 * overhead_per_candidate / mean_compute, 2),
        "search_trials": trials * 2,
        "ours_search_s": round(ours_search_wall, 2),
        "tune_search_s": round(tune_s, 2),
        "tune_ratio": round(tune_s / ours_search_wall, 3),
        "edge": edge,
        "cpus_on_host": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
