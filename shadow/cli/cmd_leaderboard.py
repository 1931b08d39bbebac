"""``shadow leaderboard``: candidates ranked per device, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from selection.leaderboard import leaderboard
from shadow.cli.common import add_format_option, add_store_options, open_store
from shadow.cli.output import render_frame

TABLE_COLUMNS = [
    "rank", "candidate_id", "slice_id", "family", "params", "device", "status",
    "accuracy", "latency_ms", "size_bytes", "error",
]

EPILOG = """\
examples:
  shadow leaderboard                       # the latest sweep, every device
  shadow leaderboard --top 5 --device host-cpu
  shadow leaderboard --sweep all --format csv > all.csv
  shadow leaderboard --format json | jq '.[0].candidate_id'

rank is per sweep and device among candidates that succeeded: higher holdout
accuracy first, then lower latency, then smaller size. Every candidate of a
sweep is scored on the same holdout rows, so ranks within a sweep compare
like with like.
"""


#: Position of these verbs in `shadow --help`.
ORDER = 20

def add_parsers(verbs: Any) -> None:
    parser = verbs.add_parser(
        "leaderboard", help="list candidates, ranked",
        description="List candidates (one row per candidate x device), ranked.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sweep", default="latest", metavar="ID",
        help="a sweep id, 'latest' (default) or 'all'",
    )
    parser.add_argument("--device", default=None, help="only this device's rows")
    parser.add_argument("--status", choices=("ok", "failed"), default=None, help="only rows with this status")
    parser.add_argument("--top", type=_positive_int, default=None, metavar="N",
                        help="only the N best ranked rows per device")
    add_format_option(parser)
    add_store_options(parser)
    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        frame = leaderboard(store, sweep=args.sweep, device=args.device, status=args.status)
    if args.top is not None:
        frame = frame[frame["rank"].notna() & (frame["rank"] <= args.top)]
    frame = frame.reset_index(drop=True)
    if args.format == "table":
        frame = frame.assign(params=varying_params(frame["params"]))
    render_frame(frame, args.format, table_columns=TABLE_COLUMNS)
    return 0


def varying_params(params: pd.Series) -> pd.Series:
    """Only the hyper-parameters that differ between rows: what a reader compares.

    The full set is in csv/json output and in `shadow promote --dry-run`.
    """
    dicts = [p if isinstance(p, dict) else {} for p in params]
    keys = sorted({k for d in dicts for k in d})
    varying = [k for k in keys if len({repr(d.get(k)) for d in dicts}) > 1]
    return pd.Series([{k: d.get(k) for k in varying} for d in dicts], index=params.index)
