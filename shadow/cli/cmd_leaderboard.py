"""``shadow leaderboard``: candidates ranked per device, as a table, CSV, JSON or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selection.errors import ConfigError
from selection.ranking.policies import POLICIES
from shadow.cli.common import add_store_options, check_out_path, int_arg, open_store
from shadow.cli.output import render_frame

if TYPE_CHECKING:
    import pandas as pd

TABLE_COLUMNS = [
    "rank", "candidate_id", "slice_id", "family", "params", "device", "numerics", "status",
    "accuracy", "emulator_agreement", "latency_ms", "placement", "size_bytes", "eligible", "ineligible_reason",
]
FORMATS = ("table", "csv", "json", "parquet")

EPILOG = """\
examples:
  shadow leaderboard                       # the latest sweep, every device
  shadow leaderboard --top 5 --device host-cpu
  shadow leaderboard --where "latency_ms < 2" --where "accuracy >= 0.8"
  shadow leaderboard --pareto --device host-cpu   # accuracy/latency/size front
  shadow leaderboard --sweep all --format csv > all.csv
  shadow leaderboard --format parquet --out board.parquet
  shadow leaderboard --format json | jq '.[0].candidate_id'
  shadow leaderboard --live                # champion and shadows on labelled live requests
  shadow leaderboard --live --channel canary --format csv

rank is per sweep and device among *eligible* candidates (ran ok and met the
ranking policy's hard constraints: no CPU fallback, within the memory budget,
plus any limits in the sweep file's [ranking] table or --policy); by default
higher holdout accuracy first, then lower latency, then smaller size. Each
row says whether it is eligible and, if not, why. Filters (--where, --slice,
--family) choose the rows shown, never the ranks. --where takes comparisons
on columns (< <= > >= == !=, 'text', true/false, is null) joined by and/or.

--live reads the channel's prediction log ($SHADOW_HOME/live/<channel>.db, written
by `shadow serve`, labels from POST /feedback or `shadow feedback`): one row per
model (role champion or shadow) paired with the champion on exactly the labelled
request rows both answered: n, accuracy with its Wilson 95% interval, the
champion's accuracy on those same rows, the difference, and agreement.
"""
LIVE_COLUMNS = ["candidate_id", "role", "n", "accuracy", "ci_low", "ci_high",
                "champion_accuracy", "delta", "agreement", "sha256"]

def add_parsers(verbs: Any) -> None:
    parser = verbs.add_parser(
        "leaderboard", help="list candidates, ranked",
        description="List candidates (one row per candidate x device), ranked.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sweep", default="latest", metavar="ID",
                        help="a sweep id, 'latest' (default) or 'all'")
    parser.add_argument("--device", default=None, help="only this device's rows")
    parser.add_argument("--status", choices=("ok", "failed"), default=None,
                        help="only rows with this status")
    parser.add_argument("--slice", dest="slice_id", default=None, metavar="SLICE_ID",
                        help="only candidates trained on this slice")
    parser.add_argument("--family", default=None, help="only this model family")
    parser.add_argument("--where", action="append", default=[], metavar="EXPR",
                        help='filter, e.g. "latency_ms < 2" (repeat: all must hold)')
    parser.add_argument("--top", type=int_arg(low=1, example=5), default=None, metavar="N",
                        help="only the N best ranked rows per device")
    parser.add_argument("--pareto", action="store_true",
                        help="only eligible rows on the accuracy/latency/size Pareto front")
    parser.add_argument("--policy", default=None, choices=sorted(POLICIES),
                        help="ranking policy (default: the sweep file's [ranking], else 'default')")
    parser.add_argument("--sort", default=None, metavar="COLS",
                        help="sort by these columns, comma separated, '-' for descending "
                        "(default: device, then rank)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table); json goes to stdout alone; "
                        "parquet needs --out")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write to FILE instead of stdout (required for parquet)")
    parser.add_argument("--live", action="store_true",
                        help="rank on live requests whose labels came back (the prediction "
                        "log) instead of the holdout")
    parser.add_argument("--channel", default=None,
                        help="with --live: the channel (default: production)")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run_live(args: argparse.Namespace) -> int:
    """``--live``: the channel's log, aggregated in SQL (no store needed)."""
    import pandas as pd

    from selection.channels.names import check_channel
    from selection.home import Home
    from selection.live.board import live_board
    from selection.live.db import connect, live_log_path
    from selection.records import DEFAULT_CHANNEL

    if args.format == "parquet":
        raise ConfigError("--live prints table, csv or json; drop --format parquet")
    channel = args.channel or DEFAULT_CHANNEL
    check_channel(channel)
    path = live_log_path(Home.resolve(args.home).root, channel)
    try:
        conn = connect(path, create=False)
    except FileNotFoundError:
        raise ConfigError(f"channel {channel!r} has no prediction log yet ({path} is missing); "
                          f"serve it (`shadow serve --channel {channel} --shadows 2`) and send "
                          "labels back, or pass the right --home/--channel") from None
    try:
        rows = live_board(conn)
    finally:
        conn.close()
    frame = pd.DataFrame([r.as_dict() for r in rows], columns=LIVE_COLUMNS)
    if args.format == "table":
        frame = frame.assign(sha256=frame["sha256"].str[:12])
    render_frame(frame, args.format, table_columns=LIVE_COLUMNS)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.live:
        return run_live(args)
    if args.channel is not None:
        raise ConfigError("--channel goes with --live (the holdout leaderboard is per sweep); "
                          "add --live or drop --channel")
    if args.format == "parquet" and args.out is None:
        # Binary on a terminal helps nobody; a file is what parquet readers take.
        raise ConfigError("--format parquet writes a file: add --out FILE.parquet")
    if args.out is not None:
        check_out_path(args.out)  # before the store is read: a bad path wastes no work
    from selection.leaderboard.frame import leaderboard  # pandas + SQL: only when it runs

    with open_store(args) as store:
        frame = leaderboard(
            store, sweep=args.sweep, device=args.device, status=args.status,
            slice_id=args.slice_id, family=args.family, where=args.where, top=args.top,
            pareto=args.pareto, policy=args.policy, sort=args.sort,
        )
    if args.format == "parquet":
        write_parquet(frame, args.out)
        return 0
    if args.format == "table":
        frame = frame.assign(params=varying_params(frame["params"]))
    if args.out is None:
        render_frame(frame, args.format, table_columns=TABLE_COLUMNS)
        return 0
    import io

    from selection.atomic import write_bytes_atomic

    # Rendered whole, then swapped in: a failed write never leaves half a file.
    buffer = io.StringIO(newline="")
    render_frame(frame, args.format, table_columns=TABLE_COLUMNS, out=buffer)
    write_bytes_atomic(Path(args.out), buffer.getvalue().encode("utf-8"))
    return 0


def write_parquet(frame: pd.DataFrame, path: str) -> None:
    """The frame as Parquet; ``params`` (a dict per row) becomes JSON text."""
    import json

    out = frame.copy()
    out["params"] = [json.dumps(p, sort_keys=True) for p in out["params"]]
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].astype("string")
    try:
        out.to_parquet(path, index=False)
    except OSError as exc:
        raise ConfigError(f"--out must be a writable file path; could not write {path!r}: {exc}") from None


def varying_params(params: pd.Series) -> pd.Series:
    """Only the hyper-parameters that differ between rows: what a reader compares.

    The full set is in csv/json output and in `shadow promote --dry-run`.
    """
    import pandas as pd

    dicts = [p if isinstance(p, dict) else {} for p in params]
    keys = sorted({k for d in dicts for k in d})
    varying = [k for k in keys if len({repr(d.get(k)) for d in dicts}) > 1]
    return pd.Series([{k: d.get(k) for k in varying} for d in dicts], index=params.index)
