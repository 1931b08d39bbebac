"""``shadow mlflow sync``: bring MLflow up to date with the store (the store is the source of truth)."""

from __future__ import annotations

import argparse
from typing import Any

from selection.errors import ConfigError
from shadow.cli.common import add_format_option, add_store_options, open_store
from shadow.cli.output import render_mapping

EPILOG = """\
examples:
  shadow mlflow sync --sweep s-20261122-093015-a1f3     # log the candidates MLflow lacks
  shadow mlflow sync --channel production               # point 'champion' at the channel's model
  shadow mlflow sync --sweep latest --mlflow http://127.0.0.1:5000

A sweep logs each candidate as an MLflow run as it lands. If the server went
down mid-sweep, the results are in the store and this logs the ones MLflow
lacks (found by their shadow.candidate_id tag: nothing is logged twice).
promote and rollback move the registered model's 'champion' alias; if the
server died right after a change, this moves it to the channel's model now.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser("mlflow", help="log a sweep's missing candidates to MLflow, or move a channel's "
                         "champion alias",
                         description="MLflow tracking and registry, kept in step with the store.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    sync = actions.add_parser(
        "sync", help="log a sweep's missing runs, or move a channel's champion alias",
        description="Log the candidates of --sweep that MLflow lacks, and/or point the registered "
        "model's 'champion' alias at --channel's current model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("--sweep", metavar="ID", default=None, help="sweep to log (or 'latest')")
    sync.add_argument("--channel", metavar="NAME", default=None, help="channel whose alias to move")
    sync.add_argument("--mlflow", metavar="URI", default=None,
                      help="with --sweep: tracking server, if the sweep stored none")
    add_format_option(sync)
    add_store_options(sync)
    sync.set_defaults(handler=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    from selection.channels.champion_alias import sync_champion
    from selection.channels.promotion import current
    from shadow.sweep.tracking import tracker_for_stored

    if args.sweep is None and args.channel is None:
        raise ConfigError("shadow mlflow sync needs --sweep ID and/or --channel NAME; "
                          "e.g. shadow mlflow sync --channel production")
    result: dict[str, Any] = {}
    with open_store(args, create=False) as store:
        if args.sweep is not None:
            sweep_id = store.latest_sweep_id() if args.sweep == "latest" else args.sweep
            if sweep_id is None:
                raise ConfigError("the store has no sweep yet; run `shadow sweep run CONFIG` first")
            tracker = tracker_for_stored(store, sweep_id, args.mlflow)
            tracker.start(store, sweep_id, store.list_candidates(sweep_id))
            result["sweep_id"] = sweep_id
            result.update(tracker.report())
            if tracker.error:
                raise ConfigError(f"MLflow: {tracker.error}; {tracker.logged} runs logged before it")
        if args.channel is not None:
            record = current(store, args.channel)
            if record is None:
                raise ConfigError(f"channel {args.channel!r} has never been promoted; nothing to sync")
            move = sync_champion(store, args.channel, record)
            if move is None:
                raise ConfigError(f"channel {args.channel!r}: its candidates' sweeps were not tracked in "
                                  "MLflow and $MLFLOW_TRACKING_URI is not set; nothing to sync")
            result.update(channel=args.channel, registered_model=move.model_name,
                          champion_version=move.version, candidate_id=record.candidate_id,
                          history_id=record.history_id)
    render_mapping(result, args.format)
    return 0
