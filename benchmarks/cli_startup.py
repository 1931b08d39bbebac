"""CLI start-up, side by side with ``python -c "import numpy"``.

Runs, interleaved (every command once per round, in a shuffled order, after
one warm-up round that is not counted), N times each (``--quick``: 5, else 15):

- ``python -c "import numpy"`` (the peer: what any numeric Python tool costs),
- ``shadow --help``, and ``shadow VERB --help`` for every verb (``sweep run``
  and ``sweep list`` included),
- ``shadow history`` and ``shadow sweep list`` on a small real store (one sweep,
  two tiny candidates, one promotion).

Reported per command: the median wall time, its ratio to numpy's median, the
median of per-round ratios (each command against numpy in the same round, the
side-by-side figure) with its spread (interquartile range over median), and
the heavy packages the command imported (torch, ray, optuna, pandas,
sqlalchemy), read from ``python -X importtime`` output of one extra run.
Target: ``--help`` and every ``VERB --help`` within 4x of numpy; ``history`` and
``sweep list`` import neither torch nor Ray.

Usage: ``python benchmarks/cli_startup.py [--quick] [--rounds N]``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from selection import Store, promote
from selection.testing import add_tiny_candidates
from shadow.cli.main import COMMANDS

TARGET_RATIO = 4.0
HEAVY = ("torch", "ray", "optuna", "pandas", "sqlalchemy")
TRAINING = ("torch", "ray")


def shadow_command() -> list[str]:
    """The installed ``shadow`` script next to this interpreter, else ``python -m shadow``."""
    script = Path(sys.executable).with_name("shadow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "shadow"]


def small_store(root: Path) -> Path:
    """A home with one sweep of two tiny real candidates, one of them promoted."""
    home = root / "home"
    with Store.open(home, create=True) as store:
        add_tiny_candidates(store, ["c-bench-a", "c-bench-b"])
        promote(store, "c-bench-a", reason="cli_startup benchmark")
    return home


def commands(home: Path) -> dict[str, list[str]]:
    shadow = shadow_command()
    verbs = [c.name for c in COMMANDS if c.name != "sweep"] + ["sweep run", "sweep list"]
    table = {"numpy": [sys.executable, "-c", "import numpy"], "--help": [*shadow, "--help"]}
    table.update({f"{verb} --help": [*shadow, *verb.split(), "--help"] for verb in verbs})
    table["history"] = [*shadow, "history", "--home", str(home)]
    table["sweep list"] = [*shadow, "sweep", "list", "--home", str(home)]
    return table


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed


def imported(argv: list[str], env: dict[str, str]) -> tuple[list[str], float]:
    """Heavy top-level packages ``argv`` imports, and the seconds spent importing in total."""
    result = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    names: set[str] = set()
    total_us = 0
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        _, self_us, cumulative, name = (part.strip() for part in line.replace(":", "|", 1).split("|"))
        total_us += int(self_us)
        names.add(name.strip().partition(".")[0])
    return [m for m in HEAVY if m in names], total_us / 1e6


def quartile_spread(values: list[float]) -> float:
    """Interquartile range over the median (0.1 = the middle half within 10 %)."""
    if len(values) < 4:
        return (max(values) - min(values)) / statistics.median(values)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (overrides --quick)")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)

    root = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    try:
        table = commands(small_store(root))
        env = {**os.environ, "SHADOW_STORE": ""}
        rng = random.Random(0)
        times: dict[str, list[float]] = {name: [] for name in table}
        for round_no in range(rounds + 1):  # round 0 warms caches and is dropped
            order = list(table)
            rng.shuffle(order)
            for name in order:
                elapsed = timed(table[name], env)
                if round_no:
                    times[name].append(elapsed)
        results: dict[str, dict[str, Any]] = {}
        numpy_median = statistics.median(times["numpy"])
        for name, argv in table.items():
            heavy, import_s = imported(argv, env)
            ratios = [t / n for t, n in zip(times[name], times["numpy"], strict=True)]
            results[name] = {
                "median_ms": round(statistics.median(times[name]) * 1000, 1),
                "ratio_to_numpy": round(statistics.median(times[name]) / numpy_median, 2),
                "paired_ratio": round(statistics.median(ratios), 2),
                "paired_ratio_spread": round(quartile_spread(ratios), 2),
                "time_spread": round(quartile_spread(times[name]), 2),
                "imports": heavy,
                "import_s": round(import_s, 3),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    width = max(len(n) for n in results)
    print(f"{'command'.ljust(width)}  median_ms  x numpy  paired (spread)  heavy imports")
    for name, r in results.items():
        print(f"{name.ljust(width)}  {r['median_ms']:>9}  {r['ratio_to_numpy']:>7}  "
              f"{r['paired_ratio']:>6} ({r['paired_ratio_spread']:>4})  {','.join(r['imports']) or '-'}")
    helps = {n: r for n, r in results.items() if n.endswith("--help")}
    worst = max(helps, key=lambda n: helps[n]["paired_ratio"])
    readers_light = all(not set(results[n]["imports"]) & set(TRAINING) for n in ("history", "sweep list"))
    summary = {
        "benchmark": "cli_startup",
        "rounds": rounds,
        "numpy_ms": results["numpy"]["median_ms"],
        "help_ratio": results["--help"]["paired_ratio"],
        "verb_help_ratio_max": helps[worst]["paired_ratio"],
        "verb_help_worst": worst,
        "history_ratio": results["history"]["paired_ratio"],
        "sweep_list_ratio": results["sweep list"]["paired_ratio"],
        "help_imports": sorted({m for r in helps.values() for m in r["imports"]}),
        "readers_import_torch_or_ray": not readers_light,
        "target_ratio": TARGET_RATIO,
        "meets_target": helps[worst]["paired_ratio"] <= TARGET_RATIO and readers_light,
        "results": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
