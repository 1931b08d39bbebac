"""``shadow promote``, ``shadow rollback`` and ``shadow history``: the channel's model."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from selection.errors import ConfigError
from selection.ranking.policies import POLICIES
from selection.records import DEFAULT_CHANNEL, HOST_DEVICE, PromotionRecord
from shadow.cli.cmd_keys import announce_new_key
from shadow.cli.common import add_format_option, add_store_options, int_arg, open_store
from shadow.cli.output import note, render_frame, render_mapping

if TYPE_CHECKING:
    from selection.gate.record import GateDecision
    from selection.store import Store
    from shadow.sweep.refit import RefitPlan

# The gate, the leaderboard and the store (pandas, SQLAlchemy) load when a verb
# runs; the refit (torch, Ray) only for --refit.

PROMOTE_EPILOG = """\
examples:
  shadow promote --best                      # rank 1 of the latest sweep on host-cpu
  shadow promote c-1a2b3c4d5e6f --reason "fresh data after the storm season"
  shadow promote --best --dry-run            # show the gate's decision, change nothing
  shadow promote c-1a2b3c4d5e6f --force --reason "rollback target for the outage"
  shadow promote --best --refit              # gate rank 1, ship it retrained on slice + holdout
  shadow promote c-1a2b3c4d5e6f --evidence live --dry-run   # judged on live labelled requests

The gate: the challenger must meet the ranking policy's constraints, beat the
channel's champion on the same holdout rows (by at least [gate]
min_improvement), pass an exact McNemar test (p < alpha, default 0.05) and
keep guard metrics (default: latency_ms no more than 10 % worse). A champion
scored on another holdout is re-scored on this one. With no champion yet an
eligible challenger passes. With [gate] require = "no-regression" the challenger
passes unless it is significantly worse than the champion (or, if [gate]
max_regression is set, scores more than that below it): the rule for --refit. The
decision is stored with the history row;
--force --reason TEXT overrides a refusal and is recorded as forced.

--evidence live: instead of the holdout, the gate pairs the champion and the
candidate on the labelled live requests both answered (the candidate rode along
as a shadow: `shadow serve --shadow ID`, labels via POST /feedback or `shadow
feedback`), in $SHADOW_HOME/live/<channel>.db, on the channel's device, with the
same checks and the same exact McNemar test; the stored decision says
"evidence": {"kind": "live", ...}.

--refit: once the gate passes, the candidate's recipe (family, parameters,
seed) is retrained on its slice plus the holdout rows, the newest data the
sweep held back to judge it, and that refit ships on the parent's decision
(recorded in the history). The refit must run ok and stay eligible on every
device its parent did, and score on the holdout rows it trained on no more than
0.05 below its parent's score there; otherwise nothing changes. A refit is
never ranked, and a refit champion can only be challenged from a sweep whose
holdout it has not trained on.

The candidate's artifact is verified against its sha256, then the channel is
switched in one database transaction and its folder swapped atomically: an edge
app reading channels/<channel>/model.onnx sees the old model or the new one,
never a mix. `shadow rollback` undoes it.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "promote", help="put a candidate into a channel (production by default)",
        description="Promote a candidate: its model replaces the channel's model atomically.",
        epilog=PROMOTE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("candidate_id", nargs="?", metavar="CANDIDATE_ID", help="candidate to promote")
    target.add_argument("--best", action="store_true", help="the rank-1 candidate of --sweep on --device")
    p.add_argument("--sweep", default="latest", metavar="ID", help="with --best: which sweep (default: latest)")
    p.add_argument("--device", default=HOST_DEVICE, help=f"device whose model to ship (default: {HOST_DEVICE})")
    _channel_option(p)
    p.add_argument("--reason", default=None, help="why; recorded in the history")
    p.add_argument("--dry-run", action="store_true",
                   help="show the gate's decision and what would be promoted; change nothing")
    p.add_argument("--force", action="store_true",
                   help="promote even if the gate refuses (needs --reason; recorded as forced)")
    p.add_argument("--refit", action="store_true",
                   help="after the gate passes, ship the candidate retrained on its slice plus the "
                   "holdout rows (see below)")
    p.add_argument("--policy", default=None, choices=sorted(POLICIES),
                   help="ranking policy for --best and the gate's constraints "
                   "(default: the sweep file's [ranking], else 'default')")
    p.add_argument("--evidence", choices=("holdout", "live"), default="holdout",
                   help="what the gate judges on: the sweep's holdout rows (default) or the "
                   "channel's labelled live requests both models answered")
    p.add_argument("--canary", default=None, metavar="SHARE|IDS",
                   help="staged rollout: devices following the channel through `shadow fleet "
                   "serve` get the new model first on this share (10%%) or these device ids "
                   "(a,b); it widens, completes or rolls back by itself (see `shadow fleet`)")
    p.add_argument("--widen-after", type=float, default=None, metavar="S",
                   help="with --canary: seconds at least at each stage before widening "
                   "(default: 300)")
    p.add_argument("--widen-on", choices=("evidence", "time"), default="evidence",
                   help="with --canary: widen when the labels show the canary is not worse "
                   "(default), or on the clock alone")
    p.add_argument("--min-labelled", type=int_arg(1, example=200), default=None, metavar="N",
                   help="with --canary: labelled requests needed on each side before the test "
                   "judges (default: 200)")
    add_format_option(p)
    add_store_options(p)
    p.set_defaults(handler=run_promote)

    r = verbs.add_parser(
        "rollback", help="undo the channel's last promotion",
        description="Put back the model the channel had before its last promotion. "
        "Repeat to go further back.",
    )
    _channel_option(r)
    r.add_argument("--reason", default=None, help="why; recorded in the history")
    add_format_option(r)
    add_store_options(r)
    r.set_defaults(handler=run_rollback)

    h = verbs.add_parser(
        "history", help="list promotions and rollbacks, newest first",
        description="The append-only history of every channel change, newest first.",
    )
    h.add_argument("--channel", default=None, help="only this channel (default: all)")
    add_format_option(h)
    add_store_options(h)
    h.set_defaults(handler=run_history)


def _channel_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel", default=DEFAULT_CHANNEL,
        help=f"channel to change (default: {DEFAULT_CHANNEL})",
    )


def run_promote(args: argparse.Namespace) -> int:
    from selection.channels.promotion import default_who
    from selection.gate.decision import evaluate_gate, force_decision, promote_through_gate
    from selection.leaderboard.frame import best_candidate

    if args.force and not (args.reason or "").strip():
        raise ConfigError('--force needs --reason TEXT saying why the gate is overridden; '
                          'e.g. --force --reason "hotfix for the storm season"')
    event = _canary_event(args)
    with open_store(args) as store:
        candidate_id = args.candidate_id
        if args.best:
            candidate_id = best_candidate(
                store, sweep=args.sweep, device=args.device, policy=args.policy
            )
        live = None
        if args.evidence == "live":
            from selection.gate.live import evaluate_live_gate

            live = evaluate_live_gate(store, candidate_id, channel=args.channel,
                                      ranking=args.policy)
        if args.dry_run:
            decision = live or evaluate_gate(
                store, candidate_id, device=args.device, channel=args.channel, ranking=args.policy
            )
            if args.force:  # what the real run would store
                decision = force_decision(decision, args.reason, default_who())
            return _show_plan(store, candidate_id, decision, args)
        refit = _refit_step(store) if args.refit else None
        with announce_new_key(store.home):  # promotion signs; say where a new key went
            record = promote_through_gate(
                store, candidate_id, device=live.device if live else args.device,
                channel=args.channel, ranking=args.policy, reason=args.reason,
                force=args.force, refit=refit, decision=live, event=event,
            )
        _report(store, record, args.format, "promoted")
    return 0


def _canary_event(args: argparse.Namespace) -> Any:
    """The rollout start event of ``--canary`` (None without it); bad values are user errors."""
    if args.canary is None:
        if args.widen_after is not None or args.min_labelled is not None:
            raise ConfigError("--widen-after and --min-labelled apply to a staged rollout; add "
                              "--canary 10% (or device ids)")
        return None
    from selection.fleet.rollout import (
        DEFAULT_MIN_LABELLED,
        DEFAULT_WIDEN_AFTER_S,
        RolloutPlan,
        parse_canary,
        start_event,
    )

    share, devices = parse_canary(args.canary)
    plan = RolloutPlan(
        share=share, devices=devices, widen_on=args.widen_on,
        widen_after_s=DEFAULT_WIDEN_AFTER_S if args.widen_after is None else args.widen_after,
        min_labelled=DEFAULT_MIN_LABELLED if args.min_labelled is None else args.min_labelled)
    return start_event(plan)


def _refit_step(store: Store) -> Callable[[str], str]:
    """The refit ``promote_through_gate`` runs once the gate has passed (with a note: it trains)."""
    from shadow.sweep.refit import refit_candidate

    def refit(parent_id: str) -> str:
        def training(plan: RefitPlan) -> None:
            note(f"gate passed: refitting {parent_id} on {plan.rows} rows (its slice plus "
                 f"{plan.holdout_rows_added} holdout rows)")
        return refit_candidate(store, parent_id, on_train=training).candidate_id
    return refit


def run_rollback(args: argparse.Namespace) -> int:
    from selection.channels.promotion import rollback

    with open_store(args) as store:
        with announce_new_key(store.home):
            record = rollback(store, channel=args.channel, reason=args.reason)
        _report(store, record, args.format, "rolled back")
    return 0


def run_history(args: argparse.Namespace) -> int:
    import pandas as pd

    from selection.channels.promotion import history

    with open_store(args) as store:
        records = history(store, channel=args.channel)
    columns = list(PromotionRecord.__dataclass_fields__)
    frame = pd.DataFrame([asdict(r) for r in records], columns=columns)
    render_frame(
        frame, args.format,
        table_columns=["history_id", "at", "channel", "action", "candidate_id",
                       "previous_candidate_id", "who", "reason"],
    )
    return 0


def _show_plan(store: Store, candidate_id: str, decision: GateDecision, args: argparse.Namespace) -> int:
    from selection.channels.promotion import current, verify_promotion
    from selection.errors import ShadowError

    candidate = store.get_candidate(candidate_id)
    result = candidate.device(args.device)
    now = current(store, args.channel)
    try:  # the real run's own checks (artifact sha256, status on the device, ...)
        sha: str | None = verify_promotion(store, candidate_id, device=args.device, channel=args.channel)[2]
        problem = None
    except ShadowError as exc:
        sha, problem = None, " ".join(str(exc).split())
    already = now is not None and sha is not None and (now.candidate_id, now.sha256) == (candidate_id, sha)
    plan = {
        "would_promote": candidate_id,
        "channel": args.channel,
        "device": args.device,
        "slice_id": candidate.slice_id,
        "accuracy": result.accuracy if result else None,
        "latency_ms": result.latency_ms if result else None,
        "status_on_device": result.status if result else "not run on this device",
        "params": candidate.params,
        "replacing": now.candidate_id if now else None,
        "gate": "pass" if decision.passed else "refuse",
        "outcome": _would(decision, problem, already, now)
        + (" (a refit of it on its slice plus the holdout would ship)" if args.refit else ""),
        "dry_run": True,
    }
    if args.format == "json":
        render_mapping({**plan, "decision": decision.to_json()}, "json")
        return 0
    render_mapping(plan, args.format)
    if args.format == "table":
        print("gate checks:")
        for check in decision.checks:
            print(f"  [{'pass' if check.passed else 'FAIL'}] {check.check}: {check.detail}")
    return 0


def _would(decision: GateDecision, problem: str | None, already: bool, now: PromotionRecord | None) -> str:
    """What a real promote would do, in words: the gate's decision, then promote's own checks.

    ``problem`` is what :func:`verify_promotion` (the real run's verification)
    raised, ``already`` whether the model it verified is the channel's now.
    """
    if already:
        return "no change: already the channel's model"
    if not decision.passed and not decision.forced:
        return "refused by the gate (override with --force --reason TEXT)" + (
            f"; forced, it would still be refused: {problem}" if problem else "")
    if problem is not None:
        return f"refused: {problem}"
    change = "promote" if now is None else f"replace {now.candidate_id}"
    return change + (" (forced past the gate)" if not decision.passed else "")


def _report(store: Store, record: PromotionRecord, fmt: str, verb: str) -> None:
    path = store.home.channel_dir(record.channel) / "model.onnx"
    summary = {
        "action": record.action,
        "channel": record.channel,
        "candidate_id": record.candidate_id,
        "device": record.device,
        "sha256": record.sha256,
        "previous_candidate_id": record.previous_candidate_id,
        "model_path": str(path),
        "history_id": record.history_id,
        "at": record.at,
        "who": record.who,
        "reason": record.reason,
    }
    # A promote made here went through the gate: its row holds the gate's decision.
    refit = None
    if record.action == "promote" and record.decision:
        from selection.gate.record import GateDecision

        refit = GateDecision.from_json(record.decision).refit
    if refit:
        summary["refit_of"] = refit.get("of")
        summary["refit_rows"] = refit.get("rows")
    if fmt != "table":
        render_mapping(summary, fmt)
        return
    was = record.previous_candidate_id or "nothing (first model of this channel)"
    print(f"{verb} {record.candidate_id} into channel '{record.channel}' (device {record.device})")
    print(f"  replaced: {was}")
    if refit:
        print(f"  refit of: {refit.get('of')} (trained on {refit.get('rows')} rows: its slice "
              f"plus {refit.get('holdout_rows_added')} holdout rows)")
    print(f"  model:    {path}")
    print(f"  sha256:   {record.sha256}")
    note(f"undo with: shadow rollback --channel {record.channel}"
         if record.action == "promote" else "see every change with: shadow history")
