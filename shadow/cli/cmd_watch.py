"""``shadow watch CONFIG --once``: one pass of the continuous loop for a channel."""

from __future__ import annotations

import argparse
from typing import Any

from selection.errors import ConfigError
from shadow.cli.common import add_format_option, add_store_options, open_store
from shadow.cli.output import note, render_mapping

WATCH_EPILOG = """\
examples:
  shadow watch sweep.toml --once                      # one pass; run it from cron
  shadow watch sweep.toml --once --channel staging    # another channel than [watch] channel
  shadow watch sweep.toml --once --format json        # what the pass did, for a script
  */10 * * * *  shadow watch /etc/shadow/sweep.toml --once --home /srv/shadow   # crontab line

One pass: read the dataset's latest version (with the batches `shadow data
append` added under the home), score the champion as deployed on every row
past its holdout stop, evaluate the sweep file's [watch.triggers], and if one
fires: sweep the current data version on Ray (local unless --address), gate the
sweep's rank 1 against the champion, then with [watch] mode = "auto" promote
it (refit first if [watch] refit = true), with mode = "propose" record a
proposal and change nothing. With no champion yet the first sweep is due.
Every step is stored as an event: see `shadow events --channel CHANNEL`.

A data version is swept at most once per channel; a sweep a stopped pass left
unfinished is resumed by the next pass, not started again. One controller per
channel: a second `shadow watch` on the same channel fails at once (exit 2).

Not built yet: the continuous mode (without --once) and the verbs that settle a
proposal (`shadow approve ID`, `shadow reject ID`); proposals are stored and
listed by `shadow events --kind proposal`.
"""

CONTINUOUS_NOT_BUILT = "continuous mode is not built yet; run --once from cron"


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "watch", help="watch a channel: when a trigger fires, sweep, gate and promote (or propose)",
        description="The continuous shadow-training controller for one channel.",
        epilog=WATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", help="sweep TOML file with a [watch] table")
    p.add_argument("--channel", default=None,
                   help="channel to watch (default: the file's [watch] channel)")
    p.add_argument("--once", action="store_true", help="do one pass and exit (what cron runs)")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="Ray cluster for the sweep (default: a private local instance)")
    add_format_option(p)
    add_store_options(p)
    p.set_defaults(handler=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    if not args.once:
        raise ConfigError(CONTINUOUS_NOT_BUILT)
    from selection.channels.names import check_channel
    from selection.home import Home
    from shadow.loop.controller import run_once
    from shadow.sweep import load_config

    if args.channel is not None:
        check_channel(args.channel)
    config = load_config(args.config)
    if config.watch is None:
        raise ConfigError(f"{args.config} has no [watch] table; add one with at least one "
                          "trigger, e.g. `[watch.triggers]` `new_rows = 1000`")
    home = Home.resolve(args.home)
    with open_store(args, create=True) as store:
        result = run_once(config, store, home, channel=args.channel, address=args.address,
                          on_note=note)
    summary = result.to_dict()
    if args.format == "table":
        summary = {k: v for k, v in summary.items() if k not in ("fired", "event_ids")}
        summary["fired"] = ", ".join(f["trigger"] for f in result.fired) or "-"
        summary["events"] = len(result.event_ids)
    render_mapping(summary, args.format)
    return 0
