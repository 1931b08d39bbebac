"""Does the shadow fleet put the right model in production when the world drifts?

A thin caller of the product's backtest (``shadow.loop.backtest``, what ``shadow backtest``
runs): the drift replay's sweep file (:func:`shadow.loop.backtest.replay_config`: all history,
recent windows of 2, 3 and 5 periods, an expanding slice, an MLP with a small Optuna budget per
slice, the newest period as holdout, the no-regression gate, ``[watch]`` sweeping each period
and promoting with refit) is run by the loop's own controller over a time-ordered dataset
(default ``noaa-weather``, drift documented from row 12,000), period by period, with only the
past visible. The next period, which no model has seen, scores the production file beside
static, the retraining rules, always-promote, the oracles, river's ARF and Hoeffding tree, the
ablation channels, no-change and majority.

Usage: ``python benchmarks/drift_replay.py [--quick] [--dataset NAME|PATH] [--period ROWS]
[--seeds 0 1 2]``. Writes ``benchmarks/results/drift_replay[_<dataset>][_quick][_seed<N>].{json,md,png}``
(and with ``--seeds``, ``..._seeds.{json,md}``: every margin per seed, its spread and verdict);
progress on stderr; the last stdout line is one JSON object (accuracies are fractions, ``regret``
and margins are in accuracy points).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
warnings.filterwarnings("ignore")

from shadow.errors import ShadowError  # noqa: E402
from shadow.loop.backtest import (  # noqa: E402
    BacktestSettings,
    replay_config,
    run_backtest,
    summarize,
)
from shadow.loop.backtest.preset import preset_selection  # noqa: E402
from shadow.loop.backtest.report import dataset_label, write_backtest, write_seeds  # noqa: E402
from shadow.sweep.config import BASELINE_FAMILIES, config_from_dict  # noqa: E402
from shadow.sweep.watch_config import POLICIES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "--quick: the first boundary is 4 periods before the manifest's [drift] from_row "
            "(mid-data if none) instead of the first one with room for every window, and 1 "
            "Optuna trial per slice instead of 3 (NOAA: 20 boundaries of 5 candidates, 16 of "
            "them after the drift). The full run: every boundary from year 6 on, 3 trials per "
            "slice (NOAA: 43 boundaries of 15 candidates)."
        ),
    )
    p.add_argument("--quick", action="store_true", help="fewer boundaries and trials (see below)")
    p.add_argument("--dataset", default="noaa-weather", help="catalog name or dataset.toml path")
    p.add_argument("--period", type=int, default=365, help="rows per period (default 365: a year)")
    p.add_argument("--trials", type=int, default=None, help="Optuna trials per slice (3; --quick 1)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs per candidate")
    p.add_argument("--start", type=int, default=None, help="first boundary row (rounded up to a period)")
    p.add_argument("--periods", type=int, default=None, help="score at most this many periods")
    p.add_argument("--latency-guard", type=float, default=None, metavar="PCT",
                   help="gate guard on latency_ms in %% (default: off; host latencies of "
                   "these microsecond MLPs on a shared machine are noise)")
    p.add_argument("--no-refit", action="store_true",
                   help="ship gated winners as the sweep trained them (default: refit on slice + "
                   "holdout, as `shadow promote --refit`; the retrain baselines follow suit)")
    p.add_argument("--require", choices=("no-regression", "improvement"), default=None,
                   help="what the production gate requires of a challenger (default: no-regression "
                   "with refit, improvement with --no-refit); the ablation channels run the strict gate")
    p.add_argument("--selection", choices=POLICIES, default=None,
                   help="how the challenger is picked out of each sweep ([watch.selection] policy; "
                   "default ensemble: the sweep's ensemble of its top 3, or of --ensemble K; "
                   "holdout with --warm-start)")
    p.add_argument("--ensemble", type=int, default=0, metavar="K",
                   help="each sweep also combines its top K candidates into one (`[ensemble] "
                   "top_k = K`; default 0: none, or 3 under --selection ensemble, the default)")
    p.add_argument("--baseline", action="append", choices=BASELINE_FAMILIES, default=None,
                   help="also train this baseline family on every slice (`[model] baselines`)")
    p.add_argument("--warm-start", action="store_true",
                   help="each sweep also continues the champion on the newest period "
                   "(`[warm_start]`)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                       help="one run per seed, then the margins judged over the runs")
    p.add_argument("--home", type=Path, default=None, help="SHADOW_HOME (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    args = p.parse_args(argv)
    if args.ensemble == 1 or args.ensemble < 0:
        p.error(f"--ensemble must be 0 (off) or at least 2; got {args.ensemble}")
    for name in ("period", "trials", "epochs", "periods"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer; got {value}")
    try:  # the preset's policy unless given (rank 1 beside a warm start)
        args.selection = preset_selection(args.selection, args.warm_start)
    except ShadowError as exc:
        p.error(str(exc))
    if args.seeds is not None and len(set(args.seeds)) < 2:
        p.error(f"--seeds needs at least two different seeds; got {args.seeds}")
    if args.home is not None and args.seeds is not None:
        p.error("--home holds one run's store; with --seeds each run gets its own temp home")
    return args


def stem(args: argparse.Namespace, seed: int | None) -> str:
    """Result file name: the default dataset's full run with seed 0 is plain ``drift_replay``."""
    name = "drift_replay"
    if args.dataset != "noaa-weather":
        name += "_" + dataset_label(args.dataset)
    name += "_quick" if args.quick else ""
    # Another setting never overwrites the default's results (a warm start implies rank 1).
    if args.selection != preset_selection(None, args.warm_start):
        name += "_" + args.selection.replace("-", "_")
    name += "_warm_start" if args.warm_start else ""
    name += f"_ensemble{args.ensemble}" if args.ensemble else ""
    name += "".join(f"_baseline_{family}" for family in args.baseline or ())
    return name + ("_seeds" if seed is None else f"_seed{seed}" if seed else "")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_one(args: argparse.Namespace, seed: int, command: str) -> dict[str, Any]:
    """One replay with ``seed``: files written, summary returned (ShadowError on bad input)."""
    started = time.perf_counter()
    config = config_from_dict(replay_config(
        args.dataset, args.period, trials=args.trials or (1 if args.quick else 3),
        epochs=args.epochs, seed=seed, latency_guard=args.latency_guard,
        refit=not args.no_refit, require=args.require, selection=args.selection,
        ensemble=args.ensemble, warm_start=args.warm_start, baselines=tuple(args.baseline or ())))
    # The trials are set above (1 with --quick), so the settings' quick only moves the start.
    settings = BacktestSettings(period=args.period, start=args.start, periods=args.periods,
                                quick=args.quick, seed=seed)
    with tempfile.TemporaryDirectory(prefix="drift-replay-") as scratch:
        home = args.home or Path(scratch) / "home"
        result = run_backtest(config, settings, home, Path(scratch) / "data", on_progress=log)
    result.seconds["total"] = time.perf_counter() - started
    summary = summarize(result)
    summary["quick"] = args.quick
    summary["seed"] = seed
    summary["selection"] = args.selection
    for path in write_backtest(args.out / stem(args, seed), result, summary, command):
        log(f"wrote {path}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/drift_replay.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    seeds = list(dict.fromkeys(args.seeds)) if args.seeds else [args.seed]
    try:
        summaries = [run_one(args, seed, command.strip()) for seed in seeds]
    except ShadowError as exc:  # a bad --dataset/--period: one line, exit 2
        log(f"drift_replay: {exc}")
        return 2
    if args.seeds is None:
        print(json.dumps(summaries[0]))
        return 0
    base = args.out / stem(args, None)
    record, _ = write_seeds(base, summaries, command.strip())
    across = record["across_seeds"]
    log(f"wrote {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    keys = ("system_post", "best_rule", "best_rule_post", "no_change_post", "arf_post",
            "oracle_refit_post", "regret_refit")
    print(json.dumps({"dataset": summaries[0]["dataset"], "quick": args.quick, "seeds": seeds,
                      "per_seed": {k: [s.get(k) for s in summaries] for k in keys},
                      "margins": {peer: {k: m[k] for k in ("mean", "min", "max", "ci95", "verdict")}
                                  for peer, m in across.items() if isinstance(m, dict)}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
