"""The gate on live evidence: champion and challenger on the labelled requests both answered.

``shadow serve --shadow CANDIDATE`` logs the challenger's predictions beside
the champion's on every request it scored (``selection.live``); labels come
back through ``POST /feedback`` or ``shadow feedback``. :func:`evaluate_live_gate`
pairs the two models on exactly the labelled request rows both answered (the
champion that channel serves now, by sha256; the challenger's artifact for that
channel's device, the one that shadowed) and applies the same checks as the
holdout gate: constraints, improvement, the exact McNemar test, the guards
(``selection.gate.checks``). The decision records ``evidence = {"kind": "live",
...}`` (the log, the rows, both sha256s) and no holdout.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from selection.channels.promotion import artifact_for, current
from selection.gate.checks import (
    comparison_checks,
    constraints_check,
    guard_check,
    guard_checks,
    result_summary,
)
from selection.gate.policy import GatePolicy, gate_from_config
from selection.gate.record import GateCheck, GateDecision
from selection.leaderboard.frame import sweep_policy
from selection.live.board import paired_outcomes
from selection.live.db import connect, live_log_path
from selection.ranking.policies import RankingPolicy
from selection.records import DEFAULT_CHANNEL, utc_now
from selection.store import Store

EVIDENCE_LIVE = "live"


def evaluate_live_gate(
    store: Store, candidate_id: str, *, channel: str = DEFAULT_CHANNEL,
    log_path: str | Path | None = None, ranking: RankingPolicy | str | None = None,
    gate: GatePolicy | None = None,
) -> GateDecision:
    """The gate's decision for ``candidate_id`` on ``channel``'s live labelled requests.

    ``log_path`` defaults to the channel's log under the store's home. Like
    :func:`~selection.gate.decision.evaluate_gate`, problems are failed checks,
    never exceptions (NotFoundError only for an unknown candidate).
    """
    challenger = store.get_candidate(candidate_id)
    sweep = store.get_sweep(challenger.sweep_id)
    policy = sweep_policy(sweep, ranking)
    if gate is None:
        table = sweep.config.get("gate")
        gate = GatePolicy() if table is None else gate_from_config(
            table, f"[gate] of sweep {sweep.sweep_id!r}")
    path = Path(log_path) if log_path is not None else live_log_path(store.home.root, channel)
    now = current(store, channel)
    device = now.device if now is not None else "host-cpu"
    result = challenger.device(device)
    summary = result_summary(challenger, result)
    checks = [constraints_check(challenger, result, device, policy, policy.name)]

    def decision(*more: GateCheck, **fields: object) -> GateDecision:
        return GateDecision(
            channel=channel, device=device, decided_at=utc_now().isoformat(),
            ranking_policy=policy.as_dict(), gate_policy=gate.as_dict(), challenger=summary,
            checks=(*checks, *more), **fields)  # type: ignore[arg-type]

    if now is None:
        return decision(GateCheck("champion", False, f"channel {channel!r} has no champion, so "
                                  "there is no live traffic to compare on; promote without "
                                  "--evidence live"))
    champion = store.get_candidate(now.candidate_id)
    theirs_summary = replace(result_summary(champion, champion.device(now.device)),
                             device=now.device, sha256=now.sha256, history_id=now.history_id)
    mine_sha = artifact_for(challenger, result) if result is not None else None
    if mine_sha is None or mine_sha == now.sha256:
        return decision(GateCheck("champion", False, f"candidate {candidate_id!r} is already "
                                  f"the model of channel {channel!r}; nothing to promote"),
                        champion=theirs_summary)
    try:
        conn = connect(path, create=False)
    except FileNotFoundError:
        return decision(GateCheck("live evidence", False, f"channel {channel!r} has no "
                                  f"prediction log ({path}); serve it with --shadow "
                                  f"{candidate_id} and send labels back"),
                        champion=theirs_summary)
    try:
        mine, theirs = paired_outcomes(conn, mine_sha, now.sha256)
    finally:
        conn.close()
    evidence = {"kind": EVIDENCE_LIVE, "log": str(path), "rows": len(mine),
                "champion_sha256": now.sha256, "challenger_sha256": mine_sha}
    if not mine:
        return decision(GateCheck("live evidence", False, f"no labelled request in {path} was "
                                  f"answered by both the champion ({now.sha256[:12]}) and "
                                  f"{candidate_id} ({mine_sha[:12]}); serve with --shadow "
                                  f"{candidate_id} and send labels back (POST /feedback, "
                                  "`shadow feedback`)"),
                        champion=theirs_summary, evidence=evidence)
    compared, improvement, test = comparison_checks(gate, np.array(mine), np.array(theirs))
    compared = [replace(c, detail=c.detail.replace("holdout rows", "labelled live request rows"))
                for c in compared]
    guards = guard_checks(gate.guards, challenger, result, champion, device, now.device)
    return decision(
        GateCheck("live evidence", True, f"{len(mine)} labelled live request rows answered by "
                  f"both models ({path})"),
        *compared, *(guard_check(g) for g in guards),
        champion=replace(theirs_summary, scored_by="live requests",
                         accuracy_on_holdout=None),
        test=test, improvement=improvement, guards=guards, evidence=evidence)
