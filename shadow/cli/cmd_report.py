"""``shadow report``: a self-contained HTML page with the leaderboard and Pareto plots."""

from __future__ import annotations

import argparse
from typing import Any

from selection.atomic import write_bytes_atomic
from selection.records import DEFAULT_CHANNEL
from shadow.cli.common import add_store_options, check_out_path, int_arg, open_store
from shadow.cli.output import note

EPILOG = """\
examples:
  shadow report --out report.html                 # the latest sweep
  shadow report --sweep s-1a2b3c --top 20 --out s.html

The page needs nothing but a browser (plots are inline SVG): per device, an
accuracy-vs-latency plot with the Pareto front and the channel's champion
(a star), and the top rows of the leaderboard.
"""

def add_parsers(verbs: Any) -> None:
    parser = verbs.add_parser(
        "report", help="write an HTML report (leaderboard + Pareto plots)",
        description="Write a self-contained HTML report of a sweep's leaderboard.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sweep", default="latest", metavar="ID",
                        help="a sweep id, 'latest' (default) or 'all'")
    parser.add_argument("--channel", default=DEFAULT_CHANNEL,
                        help=f"whose champion to mark (default: {DEFAULT_CHANNEL})")
    parser.add_argument("--top", type=int_arg(low=1, example=20), default=50, metavar="N",
                        help="table rows per device (default: 50)")
    parser.add_argument("--out", required=True, metavar="FILE.html", help="where to write the page")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = check_out_path(args.out)
    from selection.report import build_report  # pandas, matplotlib: only here

    with open_store(args) as store:
        page = build_report(store, sweep=args.sweep, channel=args.channel, top=args.top)
    write_bytes_atomic(out, page.encode("utf-8"))
    note(f"wrote {out} ({len(page) // 1024} KiB); open it in a browser")
    return 0
