"""``shadow backtest``: the loop's controller over a dataset's history, in simulated time."""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from selection.errors import ConfigError
from shadow.cli.common import add_format_option, int_arg
from shadow.cli.output import note, render_frame, render_mapping

#: What a --seeds run writes beside its OUT/seed-N folders (with seeds.md).
SEEDS_FILE = "seeds.json"

BACKTEST_EPILOG = """\
examples:
  shadow backtest sweep.toml --period 365                  # your sweep file, a period = 365 rows
  shadow backtest sweep.toml --period 365 --quick          # fewer boundaries, 1 trial per slice
  shadow backtest --dataset noaa-weather --period 365      # the drift replay's own sweep file
  shadow backtest --dataset noaa-weather --period 365 --warm-start   # + the champion continued
  shadow backtest --dataset sp500-direction --period 63 --baseline prior   # + the class prior
  shadow backtest --dataset noaa-weather --period 365 --selection holdout   # rank 1, not the top 3's vote
  shadow backtest sweep.toml --period 500 --start 4000 --periods 6 --format json
  shadow backtest --dataset noaa-weather --period 365 --quick --seeds 0 1 2   # is the lead real?

What it does: the dataset's rows up to the first boundary become a dataset of
their own in a new home (OUT/home); at each boundary the next period's rows
arrive as a batch (`shadow data append`), and the controller that `shadow
watch` runs makes one pass: the sweep file's [watch] triggers decide whether to
sweep, the gate judges the sweep's rank 1 against the champion, and it is
promoted (refit first when [watch] refit = true). A sweep file without [watch]
sweeps every period; mode = "propose" runs as "auto". The period after each
boundary, which no model has seen, scores the channel's production file as an
edge app loads it, beside: the first champion (static), every fixed retraining
rule (one per slice: its best candidate, refit), rank 1 always promoted, the
hindsight oracles, river's ARF and Hoeffding tree (prequential), no-change (the
previous label) and the majority class.

Written to OUT (default ./backtest-<dataset>): backtest.json (the summary and
every period), backtest.md (the table), backtest.png (the plot), home/ (the
store: `shadow events --home OUT/home` shows what the controller did and why).
--format json prints the summary (keys as the drift replay's: system_post,
static_post, arf_post, regret, ...; accuracies are fractions, margins and regret
accuracy points). "post" means after the dataset's documented drift ([drift]
from_row in its dataset.toml); without one, every period.

Is a lead real? Every margin (system minus a peer) is paired per period and
comes with its 95 % interval over the periods and a verdict: ahead, behind, or
a tie when the interval holds zero. --seeds runs the backtest once per seed
(OUT/seed-N/, each as above) and writes OUT/seeds.json and OUT/seeds.md: each
margin per seed, its mean, spread and a verdict over the seeds (a t interval
of the runs' margins), so a lead that changes sign with the seed reads as the
tie it is.

Time: the simulated clock (what [watch.triggers] schedule_s measures) is the
time column at the last arrived row, or rows x --row-seconds without one.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "backtest",
        help="run the loop's controller over a dataset's history and compare it with simpler rules",
        description="Replay a dataset's history through the continuous loop, period by period.",
        epilog=BACKTEST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", nargs="?", default=None,
                   help="sweep TOML file (its dataset, slices, model, gate and [watch])")
    p.add_argument("--dataset", metavar="NAME|PATH", default=None,
                   help="instead of CONFIG: the drift replay's sweep file over this dataset")
    p.add_argument("--period", type=int_arg(1, example=365), required=True, metavar="ROWS",
                   help="rows that arrive at each boundary (e.g. 365 for a year of daily rows)")
    p.add_argument("--start", type=int_arg(0, example=4000), default=None, metavar="ROW",
                   help="first boundary row, rounded up to a period (default: the earliest "
                   "where the holdout and slices fit)")
    p.add_argument("--periods", type=int_arg(1, example=10), default=None, metavar="N",
                   help="score at most N periods")
    p.add_argument("--quick", action="store_true",
                   help="start 4 periods before the documented drift (mid-data without one), "
                   "1 Optuna trial per slice")
    p.add_argument("--row-seconds", type=float, default=1.0, metavar="S",
                   help="simulated seconds per row without a time column (default 1)")
    p.add_argument("--recent-rows", type=int_arg(1, example=1095), default=None, metavar="N",
                   help="the recent window retrain-recent deploys (default: the middle one)")
    p.add_argument("--no-online", action="store_true",
                   help="skip river's online learners (minutes on long streams)")
    p.add_argument("--no-ablations", action="store_true",
                   help="skip the strict-gate ablation channels")
    # shadow.sweep.config.BASELINE_FAMILIES, spelled out: that module is too heavy for --help.
    p.add_argument("--baseline", action="append", choices=("prior",), default=None,
                   metavar="FAMILY", help="with --dataset: also train this baseline family on "
                   "every slice ([model] baselines; prior: the class prior); in your own file, "
                   "set [model] baselines there")
    # shadow.sweep.watch_config.POLICIES, spelled out for the same reason.
    p.add_argument("--selection", choices=("holdout", "track-record", "ensemble"), default=None,
                   help="with --dataset: how the challenger is picked out of each sweep "
                   "([watch.selection] policy; default ensemble: the vote of the sweep's top 3, "
                   "or holdout with --warm-start; holdout: rank 1); in your own file, set "
                   "[watch.selection] there")
    p.add_argument("--warm-start", action="store_true",
                   help="with --dataset: each sweep also continues the champion on the newest "
                   "period ([warm_start]); in your own file, set [warm_start] there")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int_arg(0, 2**31 - 1), default=None,
                       help="seed of the sweeps (a sweep file's [sweep] seed is replaced by it) "
                       "and of river's learners (default: the file's seed; 0 for --dataset)")
    seeds.add_argument("--seeds", type=int_arg(0, 2**31 - 1), nargs="+", default=None,
                       metavar="N", help="run once per seed (OUT/seed-N; a sweep file's [sweep] seed "
                       "is replaced by it) and judge the margins over the runs (OUT/seeds.json, "
                       "OUT/seeds.md); at least 2")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="results folder (default ./backtest-<dataset>); must not hold a home")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="Ray cluster for the sweeps (default: a private local instance)")
    add_format_option(p)
    p.set_defaults(handler=run_backtest_verb)


def _config(args: argparse.Namespace, seed: int | None) -> Any:
    """The sweep config to replay; ``seed`` (None: the file's, or 0 for the preset) replaces a
    file's ``[sweep] seed``."""
    from shadow.loop.backtest import replay_config
    from shadow.sweep import load_config
    from shadow.sweep.config import config_from_dict

    if (args.config is None) == (args.dataset is None):
        raise ConfigError("name a sweep file (CONFIG) or a dataset (--dataset NAME), not both "
                          "and not neither; e.g. `shadow backtest sweep.toml --period 365`")
    if args.config is not None:
        if args.warm_start:
            raise ConfigError("--warm-start sets [warm_start] in the preset of --dataset; with "
                              f"your own sweep file, add a [warm_start] table to {args.config}")
        if args.selection:
            raise ConfigError("--selection sets [watch.selection] policy in the preset of "
                              f"--dataset; with your own sweep file, set it in {args.config} "
                              "(policy = \"ensemble\" also needs an [ensemble] table)")
        if args.baseline:
            raise ConfigError("--baseline sets [model] baselines in the preset of --dataset; with "
                              f"your own sweep file, add baselines = [\"prior\"] to its [model] "
                              f"table in {args.config}")
        config = load_config(args.config)
        if seed is None or seed == config.seed:
            return config
        raw = copy.deepcopy(config.raw)
        raw.setdefault("sweep", {})["seed"] = seed
        return config_from_dict(raw, config.path)
    return config_from_dict(replay_config(args.dataset, args.period,
                                          seed=0 if seed is None else seed,
                                          warm_start=args.warm_start,
                                          selection=args.selection,
                                          baselines=tuple(args.baseline or ())))


def run_backtest_verb(args: argparse.Namespace) -> int:
    out: Path = args.out or Path(_default_out(args))
    if args.seeds is None:
        result, summary = _run_one(args, args.seed, out)
        if args.format == "json":
            json.dump(summary, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return 0
        _table(result, summary, args.format)
        return 0
    if len(set(args.seeds)) < 2:
        raise ConfigError(f"--seeds needs at least two different seeds to judge a margin's "
                          f"run-to-run spread; got {' '.join(map(str, args.seeds))}: e.g. "
                          "--seeds 0 1 2")
    for seed in dict.fromkeys(args.seeds):  # refuse before the first run, not after it
        _check_fresh(out / f"seed-{seed}")
    if (out / SEEDS_FILE).exists():
        raise ConfigError(f"{out} already holds a judgement over seeds ({SEEDS_FILE}); pass "
                          "--out with a new folder (the earlier results stay as they are)")
    summaries = [_run_one(args, seed, out / f"seed-{seed}")[1] for seed in dict.fromkeys(args.seeds)]
    return _write_seeds(args, out, summaries)


def _default_out(args: argparse.Namespace) -> str:
    dataset = args.dataset or _config(args, None).dataset
    from shadow.loop.backtest.report import dataset_label

    return f"backtest-{dataset_label(dataset)}"


def _check_fresh(out: Path) -> None:
    home = out / "home"
    if (home / "shadow.db").exists() or (home / "channels").exists():
        raise ConfigError(f"{out} already holds a backtest's home; pass --out with a new folder "
                          "(the earlier results stay as they are)")


def _run_one(args: argparse.Namespace, seed: int | None,
             out: Path) -> tuple[Any, dict[str, Any]]:
    """One backtest with ``seed`` into ``out``: its files written, its result and summary."""
    from shadow.loop.backtest import BacktestSettings, run_backtest, summarize
    from shadow.loop.backtest.report import write_backtest

    config = _config(args, seed)
    # One seed for both: the sweeps' (the file's when --seed is not given) and river's.
    settings = BacktestSettings(
        period=args.period, start=args.start, periods=args.periods, quick=args.quick,
        row_seconds=args.row_seconds, recent_rows=args.recent_rows, seed=config.seed,
        online=not args.no_online, ablations=not args.no_ablations)
    _check_fresh(out)
    home = out / "home"
    command = _command(args, config.seed, out)
    result = run_backtest(config, settings, home, out / "data", address=args.address,
                          on_progress=note)
    summary = summarize(result)
    summary["quick"] = args.quick
    summary["seed"] = config.seed
    paths = write_backtest(out / "backtest", result, summary, command)
    note(f"wrote {', '.join(map(str, paths))}; the controller's events: shadow events --home "
         f"{home}")
    return result, summary


def _write_seeds(args: argparse.Namespace, out: Path, summaries: list[dict[str, Any]]) -> int:
    from shadow.loop.backtest.report import write_seeds

    record, text = write_seeds(out / Path(SEEDS_FILE).stem, summaries,
                               _command(args, None, args.out))
    across = record["across_seeds"]
    note(f"wrote {out / SEEDS_FILE} and {out / 'seeds.md'}")
    if args.format == "json":
        json.dump(record, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif args.format == "csv":
        import pandas as pd

        render_frame(pd.DataFrame([
            {"peer": peer, **{f"seed_{s['seed']}": p for s, p in zip(summaries, m["points"])},
             "mean": m["mean"], "min": m["min"], "max": m["max"],
             "ci95_low": (m["ci95"] or [None])[0], "ci95_high": (m["ci95"] or [None, None])[1],
             "verdict": m["verdict"]}
            for peer, m in across.items() if isinstance(m, dict)]), "csv")
    else:
        sys.stdout.write(text)
    return 0


def _command(args: argparse.Namespace, seed: int | None, out: Path | None) -> str:
    """The command line that reproduces this run (for the report's header); seed None: the
    ``--seeds`` run as a whole. ``out``: the folder the run wrote (None: the default)."""
    words = [args.config] if args.config else ["--dataset", args.dataset]
    words += ["--period", str(args.period)]
    words += (["--seeds", *map(str, dict.fromkeys(args.seeds))] if seed is None
              else ["--seed", str(seed)])
    for flag in ("start", "periods", "recent_rows"):
        if getattr(args, flag) is not None:
            words += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.row_seconds != 1.0:
        words += ["--row-seconds", str(args.row_seconds)]
    if out is not None:
        words += ["--out", str(out)]
    words += [f"--{f.replace('_', '-')}" for f in ("quick", "no_online", "no_ablations",
                                                     "warm_start") if getattr(args, f)]
    for family in args.baseline or ():
        words += ["--baseline", family]
    return "shadow backtest " + shlex.join(words)


def _table(result: Any, summary: dict[str, Any], fmt: str) -> None:
    import pandas as pd

    from shadow.loop.backtest.report import accuracies

    columns = ["system", "static", "retrain_all", "retrain_recent", "oracle", "arf", "no_change"]
    rows = []
    for period in result.periods:
        acc = accuracies(result, period)
        rows.append({"rows": f"{period.start}-{period.stop - 1}",
                     "post": "yes" if period.post_drift else "",
                     "pass": period.step.action, "promoted": period.step.promoted,
                     "serving": period.serving_slice,
                     **{c: round(acc[c], 4) if c in acc else None for c in columns}})
    render_frame(pd.DataFrame(rows), fmt)
    if fmt == "table":
        keep = ["periods", "post_periods", "system_post", "static_post", "retrain_all_post",
                "retrain_recent_post", "best_rule", "best_rule_post", "oracle_post",
                "oracle_refit_post", "arf_post", "no_change_post", "regret", "regret_refit",
                "margin_vs_best_rule", "margin_vs_no_change", "margin_vs_arf", "sweeps",
                "promotions"]
        sys.stdout.write("\n")
        render_mapping({k: summary.get(k) for k in keep}, "table")
