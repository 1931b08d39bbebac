"""``shadow approve ID`` / ``shadow reject ID``: settle a proposal of ``mode = "propose"``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from shadow.cli.common import add_store_options, int_arg, open_store
from shadow.cli.output import note, render_mapping

if TYPE_CHECKING:
    from shadow.loop.proposals import Settled

# The store, the gate records and promotion (pandas, SQLAlchemy) load when a verb runs;
# the refit (torch, Ray) only for a proposal that asks for one.

APPROVE_EPILOG = """\
examples:
  shadow events --kind proposal                    # the proposals, and their ids
  shadow approve 42 --reason "checked the storm-season rows"
  shadow approve 42 --who alice --format json      # for a script

Only a pending proposal can be approved: one that no approval or rejection
settled, that no newer proposal of its channel superseded, and whose channel
still serves the model its gate judged against (a promotion or rollback since
then makes it stale). The candidate is verified, then promoted with the
proposal's stored gate decision (retrained first if the proposal says refit),
and an approval event records who, why and the new history row.
Anything else is one line, exit 2, and nothing changes.
"""

REJECT_EPILOG = """\
examples:
  shadow reject 42 --reason "latency too close to the budget"
  shadow reject 42 --who alice --format json

A rejection event records who and why; no channel changes. Only a pending
proposal can be rejected (see `shadow approve --help`).
"""


def add_parsers(verbs: Any) -> None:
    a = verbs.add_parser(
        "approve", help="approve a pending proposal: promote its candidate (mode = propose)",
        description="Approve a proposal the controller stored: promote its candidate with its "
        "gate decision.", epilog=APPROVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(a)
    a.set_defaults(handler=run_approve)
    r = verbs.add_parser(
        "reject", help="reject a pending proposal; no channel changes",
        description="Reject a proposal the controller stored; the channel keeps its model.",
        epilog=REJECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(r)
    r.set_defaults(handler=run_reject)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proposal_id", type=int_arg(1, example=42), metavar="ID",
                        help="the proposal's event id (`shadow events --kind proposal`)")
    parser.add_argument("--reason", default=None, metavar="TEXT", help="why; recorded in the event")
    parser.add_argument("--who", default=None, metavar="NAME",
                        help="who decides (default: user@host of this process)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="output format (default: table); json goes to stdout alone")
    add_store_options(parser)


def run_approve(args: argparse.Namespace) -> int:
    from shadow.loop.proposals import approve, pending

    with open_store(args) as store:
        proposal = pending(store, args.proposal_id)  # refuse before loading any refit machinery
        refit = _refit_step(store) if proposal.evidence.get("refit") is True else None
        settled = approve(store, args.proposal_id, args.who, args.reason, refit=refit)
    _show(settled, args.format)
    if args.format == "table" and settled.promotion is not None:
        note(f"undo with: shadow rollback --channel {settled.promotion.channel}")
    return 0


def run_reject(args: argparse.Namespace) -> int:
    from shadow.loop.proposals import reject

    with open_store(args) as store:
        settled = reject(store, args.proposal_id, args.who, args.reason)
    _show(settled, args.format)
    return 0


def _refit_step(store: Any) -> Any:
    from shadow.sweep.refit import refit_candidate

    def refit(parent_id: str) -> str:
        note(f"the proposal asks for a refit: refitting {parent_id} on its slice plus the holdout")
        return refit_candidate(store, parent_id).candidate_id
    return refit


def _show(settled: Settled, fmt: str) -> None:
    render_mapping(settled.to_dict(), fmt)
