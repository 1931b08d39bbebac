"""``shadow feedback FILE``: labels collected elsewhere, or a device's prediction log, into the live log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from selection.records import DEFAULT_CHANNEL
from shadow.cli.common import add_format_option

EPILOG = """\
FILE is one of:
  labels.csv     a header naming request_id and label (optionally row), one label a line
  labels.jsonl   one {"request_id": "...", "label": "rain"} object a line
  device.db      a prediction log an edge app wrote (ChannelRuntime(log=...)), copied here:
                 its requests, predictions and labels are merged into the channel's log

examples:
  shadow feedback labels.csv
  shadow feedback labels.jsonl --channel canary
  shadow feedback /mnt/robot-7/production.db        # a device's log, with its labels
  shadow leaderboard --live                         # then: the models on labelled requests

Labels go to $SHADOW_HOME/live/<channel>.db, the log `shadow serve` writes (it may
be running). The rules are those of POST /feedback: every request id must be in
the log (a request of several rows needs the row), a label must be one of the
model's classes, the same label twice is fine, a different label for a labelled
row is refused. One bad line refuses the whole file: nothing is stored (every line
is checked first); then 10,000 labels per transaction, so a running server never
waits long. A device log whose request ids the log already holds for other inputs
is refused. Running the same file again is safe: stored labels change nothing.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "feedback", help="store labels that came back (CSV/JSONL) or merge a device's prediction log",
        description="Store the labels of answered requests in the channel's prediction log, "
        "or merge a prediction log copied from an edge device.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="labels (.csv, .jsonl) or a device's log (.db)")
    p.add_argument("--channel", default=DEFAULT_CHANNEL,
                   help=f"the channel whose requests these are (default: {DEFAULT_CHANNEL})")
    p.add_argument("--home", metavar="DIR", default=None,
                   help="shadow home holding live/ (default: $SHADOW_HOME or ./.shadow)")
    add_format_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selection.channels.names import check_channel
    from selection.errors import ConfigError
    from selection.home import Home
    from selection.live.db import live_log_path
    from selection.live.ingest import ingest_labels, is_log_file, merge_log, read_labels
    from shadow.cli.output import render_mapping

    check_channel(args.channel)
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"FILE must be a label file or a prediction log; {path} is not a "
                          "file; check the path")
    log_path = live_log_path(Home.resolve(args.home).root, args.channel)
    summary: dict[str, Any] = {"channel": args.channel, "log": str(log_path), "file": str(path)}
    if is_log_file(path):
        if path.resolve() == log_path.resolve():
            raise ConfigError(f"{path} is the channel's own log; pass a log copied from a device")
        summary.update(merge_log(log_path, path, args.channel).as_dict())
    else:
        items = read_labels(path)  # every line checked before the log is opened
        summary.update(ingest_labels(log_path, items, args.channel).as_dict())
    render_mapping(summary, args.format)
    return 0
