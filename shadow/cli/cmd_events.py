"""``shadow events``: what the controller did and why (triggers, sweeps, decisions, promotions)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any, get_args

from selection.records import EventKind, EventRecord
from shadow.cli.common import add_format_option, add_store_options, int_arg, open_store
from shadow.cli.output import render_frame

KINDS: tuple[str, ...] = get_args(EventKind)

EVENTS_EPILOG = f"""\
examples:
  shadow events                                   # every channel's events, newest first
  shadow events --channel production --limit 20   # the last 20 of one channel
  shadow events --kind trigger gate promotion     # why sweeps ran, what the gate said, what shipped
  shadow events --since-id 120 --format json      # what happened after event 120, for a script

kinds: {", ".join(KINDS)}.

Every event keeps its reason (one line for a person) and its evidence (the
numbers behind it: what a trigger compared, the gate's decision). The table
shows the evidence cut short; --format json shows it in full. The log is
append-only: nothing changes or removes an event.
"""

TABLE_COLUMNS = ["event_id", "at", "channel", "kind", "data_version", "sweep_id", "candidate_id",
                 "history_id", "reason", "evidence"]


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "events", help="list what the controller did and why: triggers, sweeps, decisions, promotions",
        description="The append-only event log, newest first.",
        epilog=EVENTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--channel", default=None, help="only this channel (default: every channel)")
    p.add_argument("--kind", dest="kinds", action="extend", nargs="+", choices=KINDS, default=None,
                   metavar="KIND", help="only these kinds (repeatable; default: every kind)")
    p.add_argument("--since-id", type=int_arg(0, example=120), default=None, metavar="N",
                   help="only events after event N (its event_id)")
    p.add_argument("--limit", type=int_arg(1, example=20), default=None, metavar="N",
                   help="at most N events, the newest (default: all)")
    add_format_option(p)
    add_store_options(p)
    p.set_defaults(handler=run_events)


def run_events(args: argparse.Namespace) -> int:
    import pandas as pd

    from selection.channels.names import check_channel

    if args.channel is not None:
        check_channel(args.channel)
    with open_store(args) as store:
        records = store.list_events(
            channel=args.channel, kinds=args.kinds, since_id=args.since_id, limit=args.limit
        )
    columns = list(EventRecord.__dataclass_fields__)
    # object dtype: an id column holding None stays ints and None, not floats and NaN.
    frame = pd.DataFrame([_row(r, args.format) for r in records], columns=columns, dtype=object)
    render_frame(frame, args.format, table_columns=TABLE_COLUMNS, max_width=60)
    return 0


def _row(record: EventRecord, fmt: str) -> dict[str, Any]:
    row = asdict(record)
    row["at"] = record.at.isoformat(timespec="seconds" if fmt == "table" else "microseconds")
    if fmt == "table":
        row["evidence"] = compact(record.evidence)
    return row


def compact(evidence: dict[str, Any]) -> str:
    """``key=value`` pairs on one line, values as compact JSON (strings bare): the table's cell."""
    return " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
        for key, value in sorted(evidence.items())
    ) or "-"
