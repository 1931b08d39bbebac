"""``shadow watch CONFIG``: the continuous loop for a channel (``--once``: one pass)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from selection.errors import ConfigError
from shadow.cli.common import add_format_option, add_store_options, open_store
from shadow.cli.output import note, render_mapping

WATCH_EPILOG = """\
examples:
  shadow watch sweep.toml                             # continuous: a pass every [watch] poll_s
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

Without --once the controller runs until stopped: a pass, then [watch] poll_s
seconds' wait, again. SIGTERM or Ctrl-C stops it cleanly after the current pass
(at once while it waits) with exit 0 and a `controller` event "stopped". A
controller killed outright loses nothing: the next pass (or the next
`shadow watch`) finishes what it left, never sweeping or promoting twice.
"""


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
    from selection.channels.names import check_channel
    from selection.home import Home
    from shadow.loop.controller import PassResult, run_forever, run_once
    from shadow.sweep import load_config

    if args.channel is not None:
        check_channel(args.channel)
    config = load_config(args.config)
    if config.watch is None:
        raise ConfigError(f"{args.config} has no [watch] table; add one with at least one "
                          "trigger, e.g. `[watch.triggers]` `new_rows = 1000`")
    home = Home.resolve(args.home)

    def show(result: PassResult) -> None:
        summary = result.to_dict()
        if args.format == "table":
            summary = {k: v for k, v in summary.items() if k not in ("fired", "event_ids")}
            summary["fired"] = ", ".join(f["trigger"] for f in result.fired) or "-"
            summary["events"] = len(result.event_ids)
        render_mapping(summary, args.format)
        sys.stdout.flush()

    with open_store(args, create=True) as store:
        if args.once:
            show(run_once(config, store, home, channel=args.channel, address=args.address,
                          on_note=note))
            return 0
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            note(f"{signal.Signals(signum).name}: stopping after the current pass")
            stop.set()
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            run_forever(config, store, home, stop, channel=args.channel, address=args.address,
                        on_pass=show, on_note=note)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0
