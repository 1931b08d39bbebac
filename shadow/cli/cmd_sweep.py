"""``shadow sweep run CONFIG``: train, export and evaluate every candidate on Ray."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shadow.cli.common import add_format_option, add_store_options, open_store
from shadow.cli.output import note, render_frame, render_mapping
from shadow.cli.progress import SweepProgress

EPILOG = """\
examples:
  shadow sweep run datasets/noaa-weather/sweep.toml
  shadow sweep run my-sweep.toml --address auto          # an existing Ray cluster
  shadow sweep run my-sweep.toml --format json > summary.json
  shadow sweep run my-sweep.toml --resume s-20261122-093015-a1f3   # after a crash or Ctrl-C
  shadow sweep run my-sweep.toml --data-version 3        # an earlier version of a growing dataset
  shadow sweep run my-sweep.toml --data-version 9f2c4e1a # ... named by its fingerprint (prefix)
  shadow sweep run my-sweep.toml --mlflow http://127.0.0.1:5000   # each candidate an MLflow run

The config names the dataset, the holdout (the most recent rows, never trained
on), the slice strategies (all, recent, window, bootstrap), the model family
with its hyper-parameter grid, and the devices. See datasets/noaa-weather/sweep.toml.
Nothing is started or stored until the whole config and dataset are valid.

Data versions: a dataset that grows (`shadow data append`, a folder of batch
files, a SQL table) has versions; `shadow data versions NAME` lists them. A
sweep trains on the latest unless --data-version names another, and records
the version's fingerprint. --resume continues on the version the sweep started
on, checked row for row; a version that no longer loads, or a --data-version
other than the sweep's, is refused before Ray starts.
"""


def add_parsers(verbs: Any) -> None:
    sweep = verbs.add_parser("sweep", help="run shadow sweeps", description="Run shadow sweeps.")
    actions = sweep.add_subparsers(dest="action", metavar="ACTION", parser_class=type(sweep))
    actions.required = True
    run = actions.add_parser(
        "run", help="run a sweep from a TOML config",
        description="Train one shadow model per slice x hyper-parameter point as Ray tasks, "
        "export each to ONNX, evaluate it on the shared holdout on every device, and store "
        "the results as they land.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", metavar="CONFIG", help="sweep config file (TOML)")
    run.add_argument(
        "--address", metavar="ADDR", default=None,
        help="Ray cluster to run on: auto, HOST:PORT or ray://HOST:10001 "
        "(default: a private local Ray on 127.0.0.1)",
    )
    run.add_argument(
        "--resume", metavar="SWEEP_ID", default=None,
        help="finish a sweep that was interrupted: same CONFIG, only candidates not yet "
        "stored run (ids are deterministic, so nothing is recomputed or duplicated)",
    )
    run.add_argument(
        "--data-version", metavar="N|FP", default=None,
        help="train on this version of the dataset: its number or its fingerprint (or a prefix "
        "of 6+ characters) from `shadow data versions NAME` (default: the latest; with "
        "--resume: the version the sweep started on)",
    )
    run.add_argument(
        "--mlflow", metavar="URI", default=None,
        help="log every candidate as a run of this MLflow tracking server (overrides [mlflow] "
        "tracking_uri and $MLFLOW_TRACKING_URI); checked before anything runs",
    )
    run.add_argument("--quiet", action="store_true", help="no per-candidate progress lines")
    add_format_option(run)
    add_store_options(run)
    run.set_defaults(handler=run_sweep_command)

    listing = actions.add_parser(
        "list", help="list sweeps, newest first",
        description="List the sweeps in the store, newest first.",
    )
    add_format_option(listing)
    add_store_options(listing)
    listing.set_defaults(handler=list_sweeps_command)


def _resumed_version(args: argparse.Namespace) -> str:
    """The data version a stored sweep started on: a resume trains on it, even if data grew."""
    with open_store(args, create=False) as store:
        return store.get_sweep(args.resume).dataset_fingerprint


def list_sweeps_command(args: argparse.Namespace) -> int:
    import pandas as pd

    with open_store(args) as store:
        sweeps = store.list_sweeps()
        rows = [
            {
                "sweep_id": s.sweep_id,
                "name": s.name,
                "dataset": s.dataset,
                "status": s.status,
                "planned": s.n_planned,
                "stored": len(store.candidate_ids(s.sweep_id)),
                "holdout_rows": s.holdout.n_rows,
                "created_at": s.created_at,
                "finished_at": s.finished_at,
            }
            for s in sweeps
        ]
    columns = ["sweep_id", "name", "dataset", "status", "planned", "stored", "holdout_rows",
               "created_at", "finished_at"]
    render_frame(pd.DataFrame(rows, columns=columns), args.format)
    return 0


def run_sweep_command(args: argparse.Namespace) -> int:
    # torch, onnx and ray load only here: the other verbs stay quick to start.
    from selection.home import Home
    from shadow.data.versions import VersionNotFoundError
    from shadow.sweep import load_config, prepare_sweep, run_sweep

    config = load_config(args.config)
    home = Home.resolve(args.home)
    data_version = args.data_version
    if args.resume is not None and data_version is None:
        data_version = _resumed_version(args)
    # Every user error surfaces here, before Ray starts or the store changes. The home
    # holds the dataset's versions (`shadow data append`, recorded folder/table versions).
    try:
        prepared = prepare_sweep(config, sweep_id=args.resume, home=home, data_version=data_version)
    except VersionNotFoundError as exc:
        if args.resume is None or args.data_version is not None:
            raise
        raise VersionNotFoundError(
            f"cannot resume sweep {args.resume!r}: the data version it started on "
            f"({data_version[:12] if data_version else ''}) no longer loads ({exc}); restore "
            "the rows it trained on, or start a new sweep (drop --resume)"
        ) from None
    store = open_store(args, create=args.resume is None)
    with store:
        def announce(todo: int, skipped: int) -> None:
            if args.quiet:
                return
            per_slice = (f"{config.search.trials} Optuna trials" if config.search
                         else f"{len(config.grid)} settings")
            note(
                f"sweep {prepared.sweep_id}: {todo} candidates to run"
                + (f" ({skipped} already stored)" if skipped else "")
                + f" ({len(prepared.slices)} slices x {per_slice}) on dataset "
                f"{prepared.dataset.name!r} version {prepared.dataset.fingerprint[:12]}, "
                f"{prepared.dataset.n_rows} rows, holdout rows "
                f"{prepared.holdout.start}-{prepared.holdout.stop - 1}; devices "
                f"{', '.join(config.devices)}"
            )

        def start(todo: int, skipped: int) -> None:
            announce(todo, skipped)
            progress.start(todo)

        try:
            with SweepProgress(quiet=args.quiet) as progress:
                summary = run_sweep(
                    prepared, store, address=args.address, on_progress=progress,
                    on_start=start, resume=args.resume is not None, mlflow=args.mlflow,
                )
        except KeyboardInterrupt:
            note(f"sweep {prepared.sweep_id} interrupted; finished candidates are stored. Finish it "
                 f"with: shadow sweep run {args.config} --resume {prepared.sweep_id}")
            raise
    result = {
        "sweep_id": summary.sweep_id,
        "data_version": prepared.dataset.fingerprint,
        "planned": summary.planned,
        "skipped": summary.skipped,
        "ok": summary.ok,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 2),
        "best_candidate_id": summary.best_candidate_id,
        "best_accuracy": summary.best_accuracy,
        "device": config.devices[0],
        "store": store.url,
    }
    if summary.warm_start is not None:
        result["warm_start"] = summary.warm_start
    if summary.mlflow is not None:
        result["mlflow"] = summary.mlflow
        if summary.mlflow["error"]:
            note(f"MLflow: {summary.mlflow['not_logged']} candidates not logged ({summary.mlflow['error']}); "
                 f"they are in the store; log them later with: shadow mlflow sync --sweep {summary.sweep_id}")
    render_mapping(result, args.format)
    if args.format == "table":
        print(
            f"\nnext: shadow leaderboard --sweep {summary.sweep_id}\n"
            f"      shadow promote --best --sweep {summary.sweep_id}",
            file=sys.stdout,
        )
    return 0
