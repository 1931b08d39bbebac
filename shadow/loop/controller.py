"""The loop's controller: one pass over a channel (look, decide, sweep, gate, promote or propose).

:func:`run_once` is what ``shadow watch CONFIG --once`` runs (from cron, CI or an orchestrator):

1. Hold the channel's controller lock (:func:`controller_lock`): one controller per channel; a
   second fails at once (:class:`ControllerBusyError`).
2. Read the dataset's latest version (its fingerprint and rows), under the home's appended batches.
3. If a sweep of this channel was started on this version and never finished (a controller
   stopped mid-sweep), resume it: the same sweep id, only the candidates not yet stored run;
   if it finished but its pass stopped before the end, finish the pass (see below).
4. Otherwise build a :class:`~shadow.loop.triggers.LoopState` (the last sweep's rows, time and
   config hash; the champion's live accuracy on every row past its holdout stop, scored as
   deployed; ADWIN over that error stream) and :func:`~shadow.loop.triggers.evaluate` the
   triggers. With no champion yet every enabled trigger is due: that is the first sweep.
5. If anything fired and this version has no finished sweep of this channel: store one
   ``trigger`` event per firing, ``sweep_started``, run the sweep on Ray, ``sweep_finished``.
   Each sweep has its own seed (the config's plus the channel's sweeps before it, recorded in
   ``sweep_started`` so a resume uses it), and both events carry the caller's clock (``at_s``):
   the schedule trigger measures on that clock, so a backtest in simulated time runs it too.
6. The gate judges the sweep's rank 1 against the champion (``gate`` event, the decision as
   evidence). If it passes: ``mode = "auto"`` promotes (refit first when configured) and stores a
   ``promotion`` event in the promotion's own transaction; ``mode = "propose"`` stores a
   ``proposal`` event and changes nothing. This step is :mod:`shadow.loop.decide`.

A controller stopped at any point (even by SIGKILL) loses nothing: each step is an event, and
the next pass takes up the version's sweep where it stopped (:func:`~shadow.loop.journal.unfinished_step`): an
unfinished sweep is resumed; a finished one never gated is gated now; a gate that passed with
nothing after it is acted on now (a promotion the history already holds is not repeated). The
``promotion`` event commits in the same transaction as its history row, so one never exists
without the other; :func:`~shadow.loop.journal.check_consistency` states the invariant.

A version is never swept twice by one channel's controller (with the ``config_changed`` trigger
on: twice under the same sweep file and code; a changed one may sweep it once more): a finished
sweep of it ends the pass (a trigger that fires again on the same data, such as the schedule, stores nothing then:
no sweep may follow it). Scoring is simple on purpose: every pass scores all rows after the
champion's holdout stop (a scorecard over rows the champion never saw).
Library code: it never prints; ``on_note`` receives progress lines (the CLI puts them on stderr).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from selection.errors import ConfigError, NotFoundError, ShadowError
from selection.records import EventKind, EventRecord
from shadow.loop.decide import act, gate_and_act
from shadow.loop.journal import STEP_KINDS, same_sweep, unfinished_step
from shadow.loop.lock import ControllerBusyError, controller_lock
from shadow.loop.outcome import PassResult
from shadow.loop.pass_work import Note, PassWork
from shadow.loop.triggers import LoopState, TriggerFiring, config_hash, evaluate

if TYPE_CHECKING:
    from selection.home import Home
    from selection.store import Store
    from shadow.data.loader import Dataset
    from shadow.sweep.config import SweepConfig
    from shadow.sweep.watch_config import WatchConfig

__all__ = ["ControllerBusyError", "PassResult", "controller_lock", "run_forever",
           "run_once"]

#: A failing pass waits poll_s, then twice, four times ... at most this many times poll_s.
MAX_BACKOFF = 16


def run_once(
    config: SweepConfig, store: Store, home: Home, *, channel: str | None = None,
    address: str | None = None, now_s: float | None = None, on_note: Note | None = None,
) -> PassResult:
    """One pass of the loop for ``config``'s ``[watch]`` channel (or ``channel``); see the module."""
    watch = _watch_of(config)
    channel = channel or watch.channel
    with controller_lock(home, channel, store) as check:
        return _run(config, watch, store, home, channel, address,
                    time.time() if now_s is None else now_s, on_note or (lambda _: None), check)


def run_forever(
    config: SweepConfig, store: Store, home: Home, stop: threading.Event, *,
    channel: str | None = None, address: str | None = None, on_pass: Callable[[PassResult], None]
    | None = None, on_note: Note | None = None,
) -> int:
    """Continuous mode: a pass, then ``poll_s`` seconds' wait, again, until ``stop`` is set.

    Holds the channel's controller lock the whole time. ``stop`` set during a pass ends the
    loop after that pass (a pass is never cut short); set during the wait, at once. A pass that
    fails with a :class:`ShadowError` stores an ``error`` event and the loop carries on (the
    next pass resumes what it left), after a wait that doubles with each failure in a row (up
    to :data:`MAX_BACKOFF` times ``poll_s``), so a store or cluster that is down is not hammered.
    ``controller`` events mark the start and the clean stop. Returns the number of passes run.
    """
    watch = _watch_of(config)
    channel = channel or watch.channel
    note = on_note or (lambda _: None)
    passes = failures = 0

    def mark(kind: EventKind, reason: str, **evidence: Any) -> None:
        store.append_event(EventRecord(channel=channel, kind=kind, reason=reason,
                                       evidence=evidence))
    from shadow.sweep.cluster import ray_session

    # One Ray for the controller's life: each sweep would otherwise start and stop its own
    # (seconds of every cycle from new data to serving), at the cost of Ray idling between.
    with controller_lock(home, channel, store) as check, ray_session(address):
        mark("controller", f"started watching channel {channel!r} every {watch.poll_s:g} s",
             state="started", poll_s=watch.poll_s)
        while True:
            try:
                result = _run(config, watch, store, home, channel, address, time.time(), note,
                              check)
            except ControllerBusyError:
                raise  # the channel's lock was lost: another controller may take over now
            except ShadowError as exc:
                failures += 1
                wait = watch.poll_s * min(2 ** (failures - 1), MAX_BACKOFF)
                message = " ".join(str(exc).split())
                try:  # the store may be what failed: then the event cannot be stored either
                    mark("error", f"a pass failed; the controller carries on in {wait:g} s: "
                         f"{message}", error=message, failures_in_a_row=failures, wait_s=wait)
                except ShadowError as again:
                    note(f"could not store the error event: {' '.join(str(again).split())}")
                note(f"pass failed ({failures} in a row; next in {wait:g} s): {message}")
            else:
                failures, wait = 0, watch.poll_s
                if on_pass is not None:
                    on_pass(result)
            passes += 1
            if stop.is_set() or stop.wait(wait):
                break
        mark("controller", f"stopped after {passes} pass(es), on request", state="stopped",
             passes=passes)
    return passes


def _watch_of(config: SweepConfig) -> WatchConfig:
    if config.watch is None:
        where = config.path or "the sweep config"
        raise ConfigError(f"{where} has no [watch] table; add one with a channel and at least one "
                          'trigger, e.g. `[watch.triggers]` `new_rows = 1000`')
    return config.watch


def _run(config: SweepConfig, watch: WatchConfig, store: Store, home: Home, channel: str,
         address: str | None, now_s: float, note: Note, check: Callable[[], None]) -> PassResult:
    from selection.channels.promotion import current
    from shadow.data.catalog import find_manifest
    from shadow.data.loader import load_dataset

    dataset = load_dataset(find_manifest(config.dataset, relative_to=config.base_dir), home)
    version = dataset.fingerprint
    check()  # a controller that lost its lock does nothing more
    work = PassWork(store, channel, version, check)
    base = PassResult(channel=channel, mode=watch.mode, dataset=dataset.name,
                      data_version=version, rows=dataset.n_rows, action="none")
    note(f"channel {channel!r}: dataset {dataset.name!r} version {version[:12]}, "
         f"{dataset.n_rows} rows")
    log = store.list_events(channel=channel, kinds=list(STEP_KINDS))
    sweeps = [e for e in log if e.kind in ("sweep_started", "sweep_finished")]
    code_hash = config_hash(config.raw, _code_version())
    # With config_changed on, a changed file or code may sweep a version again, once per hash.
    key = code_hash if watch.triggers.config_changed else None
    sweep_id, step, gate = unfinished_step(log, version, key)
    seed: int | None = None  # the sweep's own seed, as its sweep_started event recorded it

    if step == "act" and gate is not None and sweep_id is not None:
        # Stopped after the gate passed, before its promotion or proposal was stored.
        note(f"sweep {sweep_id}: the gate passed {gate.candidate_id} but nothing followed; "
             "acting on it now")
        result = replace(base, action="recovered", sweep_id=sweep_id,
                         challenger_id=gate.candidate_id, gate_passed=True)
        result = act(work, result, watch, sweep_id, gate.candidate_id or "",
                      gate.evidence, None, note)
        return replace(result, event_ids=tuple(work.events))
    if step == "sweep":
        # A controller stopped mid-sweep on this very version: take it up, never start another.
        note(f"resuming sweep {sweep_id}, started on this version and never finished")
        work.event("sweep_resumed", f"resuming sweep {sweep_id} on data version {version[:12]}",
                   sweep_id=sweep_id)
        result = replace(base, action="resumed", sweep_id=sweep_id)
        seed = _started_seed(log, sweep_id) if sweep_id is not None else None
    elif step == "gate" and sweep_id is not None:
        # Stopped after the sweep finished, before the gate judged it: judge it now.
        note(f"sweep {sweep_id} finished on this version but was never gated; gating it now")
        result = replace(base, action="recovered", sweep_id=sweep_id)
        result = gate_and_act(work, result, watch, sweep_id, dataset, note)
        return replace(result, event_ids=tuple(work.events))
    else:
        champion = current(store, channel)
        state, champion_id = _loop_state(store, channel, dataset, sweeps, now_s, code_hash,
                                         champion is not None)
        firings = evaluate(state, watch.triggers)
        if champion is None:
            firings = tuple(_first_sweep(channel, watch))
        result = replace(base, fired=tuple(f.as_dict() for f in firings),
                         champion_id=champion_id, live_correct=state.live_correct,
                         live_total=state.live_total)
        if not firings:
            note("no trigger fired: nothing to do")
            return replace(result, detail="no trigger fired")
        if any(same_sweep(e, version, key) for e in sweeps if e.kind == "sweep_finished"):
            note(f"{len(firings)} trigger(s) fired, but this data version was already swept for "
                 f"channel {channel!r}{' with this config' if key else ''}: no second sweep")
            return replace(result, action="already_swept",
                           detail="this data version already has a finished sweep")
        for firing in firings:
            note(f"trigger {firing.trigger}: {firing.reason}")
            work.event("trigger", firing.reason, evidence=firing.as_dict())
        from shadow.sweep.plan import new_sweep_id

        sweep_id = new_sweep_id()
        # Stored before the sweep starts: a controller stopped from here on resumes this id,
        # with this seed (each sweep its own, or every study would ask the same trials again).
        seed = config.seed + sum(e.kind == "sweep_started" for e in sweeps)
        work.event("sweep_started", f"sweep {sweep_id} on data version {version[:12]} "
                   f"({dataset.n_rows} rows)", sweep_id=sweep_id,
                   evidence={"rows": dataset.n_rows, "config_hash": code_hash, "seed": seed,
                             "at_s": now_s, "triggers": [f.trigger for f in firings]})
        result = replace(result, action="swept", sweep_id=sweep_id)

    assert sweep_id is not None
    summary = _sweep(_seeded(config, seed), store, home, version, sweep_id, address, note)
    work.event("sweep_finished", f"sweep {sweep_id} {summary['status']}: {summary['ok']} ok, "
               f"{summary['failed']} failed", sweep_id=sweep_id,
               evidence={**summary, "rows": dataset.n_rows, "config_hash": code_hash,
                         "at_s": now_s})
    result = gate_and_act(work, result, watch, sweep_id, dataset, note)
    return replace(result, event_ids=tuple(work.events))


def _first_sweep(channel: str, watch: WatchConfig) -> Iterator[TriggerFiring]:
    """No champion yet: every enabled trigger is due (the first sweep)."""
    for name in watch.triggers.enabled():
        yield TriggerFiring(name, f"channel {channel!r} has no champion yet: the first sweep is "
                            "due", {"no_champion": True})


def _loop_state(store: Store, channel: str, dataset: Dataset, sweeps: list[EventRecord],
                now_s: float, code_hash: str, has_champion: bool) -> tuple[LoopState, str | None]:
    """What the triggers look at, and the champion's candidate id (None without one)."""
    rows_at: int | None = None
    at_s: float | None = None
    hash_at: str | None = None
    done = next((e for e in sweeps if e.kind == "sweep_finished"), None)  # newest first
    if done is not None:
        rows_at = _int(done.evidence.get("rows"))
        # The caller's clock at the time (simulated in a backtest); the event's own time else.
        at = done.evidence.get("at_s")
        at_s = float(at) if isinstance(at, int | float) and not isinstance(at, bool) \
            else done.at.timestamp()
        hash_at = done.evidence.get("config_hash")
    else:  # no controller sweep yet: the newest sweep of this dataset (e.g. `shadow sweep run`)
        sweep = next((s for s in store.list_sweeps() if s.dataset == dataset.name), None)
        if sweep is not None:
            rows_at, at_s = sweep.holdout.stop, sweep.created_at.timestamp()
    state = LoopState(rows_now=dataset.n_rows, rows_at_last_sweep=rows_at, now_s=now_s,
                      last_sweep_at_s=at_s, config_hash=code_hash,
                      config_hash_at_last_sweep=hash_at)
    if not has_champion:
        return state, None
    from shadow.loop.drift import DriftWatch
    from shadow.loop.scorecard import ChampionScorer

    scorer = ChampionScorer.from_store(store, channel)
    champion_id = scorer.model.candidate_id
    start = scorer.seen_until if scorer.seen_until is not None else dataset.n_rows
    if start >= dataset.n_rows:
        return replace(state, promotion_accuracy=scorer.promotion.accuracy), champion_id
    # Every row the champion never saw, each pass (kept simple: no record of what was scored).
    batch = scorer.score(dataset.features[start:], dataset.labels[start:],
                         columns=dataset.feature_names, classes=dataset.classes,
                         first_row=start, batch_id=f"rows {start}-{dataset.n_rows - 1}")
    drift = DriftWatch().update(batch.errors)
    return replace(
        state, live_correct=batch.correct, live_total=batch.rows,
        promotion_accuracy=scorer.promotion.accuracy, drift_fired=drift.fired,
        drift_detail=drift.to_dict() if drift.fired else {},
    ), champion_id


def _sweep(config: SweepConfig, store: Store, home: Home, version: str, sweep_id: str,
           address: str | None, note: Note) -> dict[str, Any]:
    """Run (or resume, if the store has it) sweep ``sweep_id`` on data ``version``; its counts.

    A resumed sweep is finished as it was planned, from the config its record stored: the
    sweep file may have been edited since (even only its ``[watch]`` table), and the rest of a
    sweep must not be planned from another file than its start.
    """
    from shadow.sweep import config_from_dict, prepare_sweep, run_sweep

    try:
        stored = store.get_sweep(sweep_id)
        resume = True  # the store has it: only the candidates not yet stored run
        config = config_from_dict(stored.config, config.path)
    except NotFoundError:
        resume = False  # stopped before the sweep was recorded: start it under the same id
    prepared = prepare_sweep(config, sweep_id=sweep_id, home=home, data_version=version)
    note(f"sweep {sweep_id}: {'resuming' if resume else 'starting'} on "
         f"{prepared.dataset.n_rows} rows ({len(prepared.slices)} slices)")
    summary = run_sweep(prepared, store, address=address, resume=resume)
    status = store.get_sweep(sweep_id).status
    note(f"sweep {sweep_id} {status}: {summary.ok} ok, {summary.failed} failed in "
         f"{summary.seconds:.1f} s")
    return {"status": status, "planned": summary.planned, "skipped": summary.skipped,
            "ok": summary.ok, "failed": summary.failed, "seconds": round(summary.seconds, 2),
            "best_candidate_id": summary.best_candidate_id,
            "best_accuracy": summary.best_accuracy}


def _started_seed(log: list[EventRecord], sweep_id: str) -> int | None:
    """The seed the ``sweep_started`` event of ``sweep_id`` recorded (None: an older event)."""
    started = next((e for e in log if e.kind == "sweep_started" and e.sweep_id == sweep_id), None)
    return _int(started.evidence.get("seed")) if started is not None else None


def _seeded(config: SweepConfig, seed: int | None) -> SweepConfig:
    """``config`` with the sweep's own seed (also in its raw form, which the sweep record keeps)."""
    if seed is None or seed == config.seed:
        return config
    raw = {**config.raw, "sweep": {**config.raw.get("sweep", {}), "seed": seed}}
    return replace(config, seed=seed, raw=raw)


def _code_version() -> str:
    """The package version and git commit (not its dirty flag: edits elsewhere would flip it)."""
    from shadow import __version__
    from shadow.sweep.lineage import git_commit

    commit = git_commit()
    return f"{__version__}+{commit['commit'] if commit else 'nogit'}"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
