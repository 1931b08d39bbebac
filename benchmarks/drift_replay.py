"""Does the shadow fleet put the right model in production when the world drifts?

Walks a time-ordered catalog dataset (default ``noaa-weather``, drift documented
from row 12,000) forward in periods. At each period boundary, with only the
past visible, the real product runs: a Ray sweep over recent windows, an
expanding slice and all history with a small Optuna budget per slice (holdout:
the most recent visible period), the champion/challenger gate against the
current champion (``require = "no-regression"``), and ``promote --refit`` when
it passes (the winner retrained on its slice plus the holdout), all in one
SHADOW_HOME. The production file (``channels/production/model.onnx``) is then
scored with ONNX Runtime on the next period, which no model has seen, beside:
the strict gate with and without refit (ablation channels), static (the first
champion), retrain-all, retrain-recent and always-promote-rank-1 (each
deploying its candidate refit up to the boundary), the oracles (the best sweep
candidate and the best slice refit, in hindsight), river's ARF and Hoeffding
tree (prequential), no-change and majority class.

Usage: ``python benchmarks/drift_replay.py [--quick] [--dataset NAME] [--period ROWS]``.
Writes ``benchmarks/results/drift_replay[_quick].{json,md,png}``; progress on
stderr; the last stdout line is one JSON object (accuracies are fractions,
``regret`` is in accuracy points).
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the drift/ helpers beside this file

from drift.replay import ReplayResult, replay  # noqa: E402
from drift.report import markdown, plot, summarize  # noqa: E402
from drift.shadow_step import ReplaySettings  # noqa: E402

from shadow.data.catalog import find_manifest  # noqa: E402
from shadow.errors import ShadowError  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: --quick starts this many periods before the documented drift (or at mid-data).
QUICK_LEAD_PERIODS = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "--quick: the first boundary is 4 periods before the manifest's [drift] from_row "
            "(mid-data if none) instead of the first one with room for every window, and 1 "
            "Optuna trial per slice instead of 3 (NOAA: 20 boundaries of 5 candidates, 16 of "
            "them after the drift; about 6 min on 2 cores). The full run: every boundary "
            "from year 6 on, 3 trials per slice (NOAA: 43 boundaries of 15 candidates, about "
            "16 min on 2 cores, 20 on busy ones)."
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", type=Path, default=None, help="SHADOW_HOME (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    args = p.parse_args(argv)
    for name in ("period", "trials", "epochs", "periods"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer; got {value}")
    return args


def quick_start(dataset: str, period: int) -> int:
    """A few periods before the documented drift, so --quick still sees before and after."""
    manifest = find_manifest(dataset)
    if manifest.drift_from_row is not None:
        return max(0, manifest.drift_from_row - QUICK_LEAD_PERIODS * period)
    return (manifest.declared_rows or 0) // 2


def stem(args: argparse.Namespace) -> str:
    """Result file name: the default dataset's full run is plain ``drift_replay``."""
    name = "drift_replay"
    if args.dataset != "noaa-weather":
        name += "_" + Path(args.dataset).parent.name if "/" in args.dataset else "_" + args.dataset
    return name + ("_quick" if args.quick else "")


def write_results(result: ReplayResult, summary: dict[str, Any], args: argparse.Namespace,
                  command: str) -> list[Path]:
    """The JSON record, the markdown table and the plot; returns their paths."""
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / stem(args)
    periods = [
        {"start": p.start, "stop": p.stop, "post_drift": p.post_drift,
         "serving": p.production_id, "serving_slice": p.production_slice,
         "chosen_slices": p.chosen, "accuracy": p.accuracy, **asdict(p.step)}
        for p in result.periods
    ]
    record = {"command": command, "settings": asdict(result.settings),
              "drift_from_row": result.drift_from_row, "summary": summary, "periods": periods}
    paths = [base.with_suffix(".json"), base.with_suffix(".md"), base.with_suffix(".png")]
    paths[0].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(result, summary, command), encoding="utf-8")
    plot(result, paths[2])
    return paths


def start_private_ray() -> None:
    """A Ray of this process alone, even when another user's cluster runs on the machine.

    ``init_local_ray()`` leaves the address to Ray, and Ray then joins the
    cluster recorded in ``/tmp/ray/ray_current_cluster`` (someone's ``ray
    start``) if one runs: a replay would share, and die with, a stranger's
    cluster. ``RAY_ADDRESS=local`` makes Ray start a private one instead.
    """
    from shadow.sweep.cluster import init_local_ray

    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = "local"
    try:
        init_local_ray()
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/drift_replay.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    settings = ReplaySettings(
        period=args.period, trials=args.trials or (1 if args.quick else 3), epochs=args.epochs,
        seed=args.seed, latency_guard=args.latency_guard, refit=not args.no_refit,
        require=args.require or ("improvement" if args.no_refit else "no-regression"),
    )
    import ray

    started = time.perf_counter()
    start_private_ray()
    try:
        start = args.start if args.start is not None else (
            quick_start(args.dataset, args.period) if args.quick else None)
        with tempfile.TemporaryDirectory(prefix="drift-home-") as scratch:
            home = args.home or Path(scratch)
            result = replay(args.dataset, settings, home, log, start=start, max_periods=args.periods)
    except (ValueError, ShadowError) as exc:  # a bad --dataset/--period: one line, exit 2
        log(f"drift_replay: {exc}")
        return 2
    finally:
        ray.shutdown()
    result.seconds["total"] = time.perf_counter() - started
    summary = summarize(result)
    summary["quick"] = args.quick
    for path in write_results(result, summary, args, command.strip()):
        log(f"wrote {path}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
