"""``shadow backtest``: the loop's own controller, run over a dataset's history in simulated time.

The dataset's past up to the first boundary becomes a dataset of its own in a fresh home
(:mod:`shadow.data.history`); at each later boundary the next period's rows arrive as a batch
appended with :func:`shadow.data.append.append_batch`, and :func:`shadow.loop.controller.run_once`
makes one pass on the clock of the data (its time column, or rows). Whatever the sweep file's
``[watch]`` triggers, gate and refit would do live, they do here, and the period after each
boundary, which no model has seen, scores:

- the channel's production file as an edge app loads it (``system``), and the first champion
  never replaced (``static``);
- every fixed retraining rule (one per slice of the sweep file: its best candidate, refit when
  the loop refits), the sweep's rank 1 always promoted, and the hindsight oracles over the latest
  sweep's candidates and over the refits (:mod:`shadow.loop.backtest.rules`);
- the ablation channels (strict gate with and without refit) when enabled;
- river's online learners (prequential) and the no-change and majority baselines, over the same
  rows, afterwards.

A boundary where no trigger fired sweeps nothing: every sweep-based approach keeps what it
deployed last (retraining rules follow the system's schedule). ``mode = "propose"`` runs as
``"auto"`` (an approver who agrees at once): a backtest has nobody to ask.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selection.home import Home
from selection.store import Store
from selection.tracking.settings import ENV_TRACKING_URI, TRACKING_OFF
from shadow.data.catalog import find_manifest
from shadow.data.loader import Dataset, load_dataset
from shadow.errors import ConfigError
from shadow.loop.backtest.baselines import ONLINE_LEARNERS, majority, no_change, prequential
from shadow.loop.backtest.plan import BacktestSettings, clock, plan_boundaries
from shadow.loop.backtest.rules import (
    ABLATIONS,
    gate_ablations,
    ok_candidates,
    refit_all,
    slice_bests,
)
from shadow.loop.deployed import DeployedModel, accuracy, predict_labels, read_channel
from shadow.sweep.config import SweepConfig, config_from_dict, stored_baselines
from shadow.sweep.ensemble import ENSEMBLE_FAMILY

Log = Callable[[str], None]


@dataclass(frozen=True)
class BoundaryStep:
    """What the controller (and the comparison around it) did at one boundary."""

    boundary: int
    #: The controller pass's action: none, swept, already_swept, resumed, recovered.
    action: str
    fired: tuple[str, ...]
    sweep_id: str | None
    pass_seconds: float
    candidates_ok: int = 0
    challenger_id: str | None = None
    gate_passed: bool | None = None
    gate_reasons: tuple[str, ...] = ()
    promoted: bool = False
    #: Ablation channel -> whether it promoted here.
    ablations: dict[str, bool] = field(default_factory=dict)
    #: Slice id -> its best candidate (by holdout accuracy) in this boundary's sweep.
    slice_bests: dict[str, str] = field(default_factory=dict)
    #: Parent candidate id -> its refit's id; and why a refit was refused.
    refits: dict[str, str] = field(default_factory=dict)
    refit_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class PeriodResult:
    """One scored period: rows ``[start, stop)``, what served it, and every approach's accuracy."""

    start: int
    stop: int
    post_drift: bool
    step: BoundaryStep
    serving_id: str
    serving_slice: str
    accuracy: dict[str, float] = field(default_factory=dict)
    #: The slice behind each sweep-based approach, for the table.
    chosen: dict[str, str] = field(default_factory=dict)


@dataclass
class BacktestResult:
    """Everything the report needs."""

    dataset: str
    channel: str
    settings: BacktestSettings
    boundaries: list[int]
    drift_from_row: int | None
    #: Slice ids of the fixed retraining rules: the one called retrain_all, retrain_recent.
    rule_all: str | None
    rule_recent: str | None
    periods: list[PeriodResult]
    seconds: dict[str, float]
    config: dict[str, Any]


def backtest_config(config: SweepConfig, dataset_toml: Path,
                    settings: BacktestSettings) -> tuple[SweepConfig, list[str]]:
    """The sweep file as the backtest runs it (on the cut dataset), and notes on what changed."""
    raw = json.loads(json.dumps(config.raw))
    raw.setdefault("sweep", {})["dataset"] = str(dataset_toml)
    notes = []
    watch = raw.get("watch")
    if watch is None:
        raw["watch"] = {"mode": "auto", "triggers": {"new_rows": settings.period}}
        notes.append(f"no [watch] table: sweeping every period (new_rows = {settings.period}), "
                     "mode = auto")
    elif watch.get("mode", "propose") == "propose":
        raw["watch"] = {**watch, "mode": "auto"}
        notes.append('[watch] mode = "propose" runs as "auto": every proposal is approved')
    if settings.quick and "search" in raw:
        raw["search"] = {**raw["search"], "trials": 1, "parallel": 1}
        notes.append("--quick: 1 Optuna trial per slice")
    # Simulated sweeps in a scratch home are not the team's runs: tracking is turned off by the
    # table itself ([mlflow] enabled = false, stored with each sweep), which $MLFLOW_TRACKING_URI
    # cannot override, so neither the sweeps nor the promotions of their candidates track.
    if raw.get("mlflow") is not None or os.environ.get(ENV_TRACKING_URI):
        notes.append("MLflow tracking off: the backtest's sweeps and promotions are not tracked "
                     "([mlflow] and $MLFLOW_TRACKING_URI ignored)")
    raw["mlflow"] = dict(TRACKING_OFF)
    return config_from_dict(raw, config.path), notes


def _recent_rule(config: SweepConfig, settings: BacktestSettings) -> str | None:
    sizes = sorted(int(s.config["rows"]) for s in config.slices if s.name == "recent")
    if settings.recent_rows is not None:
        return f"recent-{settings.recent_rows}"
    return f"recent-{sizes[(len(sizes) - 1) // 2]}" if sizes else None


class _Scorer:
    """Scores models on rows of the original dataset; each stored artifact is read once."""

    def __init__(self, store: Store, data: Dataset) -> None:
        self.store, self.data = store, data
        self.truth = np.asarray(data.classes, dtype=object)[data.labels]

    def deployed(self, model: DeployedModel, rows: slice) -> float:
        predicted = predict_labels(model.model, model.manifest["model_io"], self.data.features[rows])
        return accuracy(predicted, self.truth[rows])

    def candidate(self, candidate_id: str, rows: slice) -> float:
        record = self.store.get_candidate(candidate_id)
        model = self.store.artifacts.read_verified(str(record.onnx_sha256))
        predicted = predict_labels(model, record.lineage["model_io"], self.data.features[rows])
        return accuracy(predicted, self.truth[rows])


def run_backtest(
    config: SweepConfig, settings: BacktestSettings, home: Path, work: Path, *,
    address: str | None = None, on_progress: Log | None = None, on_note: Log | None = None,
) -> BacktestResult:
    """Walk the history of ``config``'s dataset; ``home`` must be new (it receives everything).

    ``work`` holds the cut dataset and its batch files. Raises ConfigError for a home that is
    not new or a dataset too short for one boundary, before anything is written.
    """
    from shadow.data.append import append_batch
    from shadow.data.history import full_table, write_batch, write_prefix
    from shadow.loop.controller import run_once
    from shadow.sweep.cluster import ray_session

    progress = on_progress or (lambda _: None)
    manifest = find_manifest(config.dataset, relative_to=config.base_dir)
    table = full_table(manifest)
    boundaries = plan_boundaries(config, table, manifest, settings)
    place = Home(home.absolute())
    if place.db_path.exists() or place.channels_dir.exists():
        raise ConfigError(f"backtest home {place.root} already holds a store or channels; a "
                          "backtest needs a new home: pass --home with a new folder, or none")
    # The truth is read back from the same CSV the sweeps read (a label "01" becomes 1 there),
    # so every model is scored on the labels it was trained to predict.
    whole = write_prefix(manifest, table, len(table), work / "whole", name=f"{manifest.name}-all")
    data = load_dataset(find_manifest(str(whole)))
    past = write_prefix(manifest, table, boundaries[0], work / "dataset",
                        name=f"{manifest.name}-backtest")
    cut = find_manifest(str(past))
    run_config, notes = backtest_config(config, past, settings)
    for line in notes:
        progress(line)
    assert run_config.watch is not None
    channel = run_config.watch.channel
    at = clock(table, manifest, settings)
    result = BacktestResult(manifest.name, channel, settings, boundaries, manifest.drift_from_row,
                            "all" if any(s.name == "all" for s in run_config.slices) else None,
                            _recent_rule(run_config, settings), [], {}, run_config.raw)
    started = time.perf_counter()
    # One Ray for the whole walk (each pass would otherwise start and stop its own).
    with ray_session(address), Store.open(place, url=f"sqlite:///{place.db_path}") as store:
        walk = _Walk(store, place, channel, _Scorer(store, data), settings, run_config.watch.refit,
                     manifest.drift_from_row)
        for index, boundary in enumerate(boundaries):
            if index:
                batch = write_batch(table, boundaries[index - 1], boundary,
                                    work / "batches" / f"rows-{boundaries[index - 1]}-{boundary}.csv")
                append_batch(cut, batch, place)
            begun = time.perf_counter()
            outcome = run_once(run_config, store, place, address=address, now_s=at(boundary),
                               on_note=on_note)
            period = walk.step(outcome, boundary, time.perf_counter() - begun)
            result.periods.append(period)
            progress(_progress_line(index, len(boundaries), period, result))
    result.seconds["loop"] = time.perf_counter() - started
    if settings.online:
        _score_online(result, data, progress)
    return result


class _Walk:
    """The comparison's state between boundaries: what each approach deploys now."""

    def __init__(self, store: Store, home: Home, channel: str, scorer: _Scorer,
                 settings: BacktestSettings, refit: bool, drift_from_row: int | None) -> None:
        self.store, self.home, self.channel, self.scorer = store, home, channel, scorer
        self.settings, self.refit, self.drift_from_row = settings, refit, drift_from_row
        self.static: DeployedModel | None = None
        self.pool: list[str] = []  # the latest sweep's candidates (the oracle picks among them)
        self.rules: dict[str, str] = {}  # slice id -> candidate it deploys (its refit if any)
        self.refits: list[str] = []  # the latest sweep's refits (the refit oracle)
        self.always: str | None = None  # the latest sweep's rank 1 (its refit if any)

    def step(self, outcome: Any, boundary: int, seconds: float) -> PeriodResult:
        step = BoundaryStep(boundary=boundary, action=outcome.action,
                            fired=tuple(f["trigger"] for f in outcome.fired),
                            sweep_id=outcome.sweep_id, pass_seconds=seconds,
                            challenger_id=outcome.challenger_id, gate_passed=outcome.gate_passed,
                            gate_reasons=outcome.gate_reasons,
                            promoted=outcome.promoted_id is not None)
        if outcome.sweep_id is not None and outcome.action in ("swept", "resumed", "recovered"):
            step = self._after_sweep(step, outcome.sweep_id, outcome.challenger_id)
        rows = slice(boundary, boundary + self.settings.period)
        production = None
        if self.home.channel_dir(self.channel).exists():  # none until a first promotion
            production = read_channel(self.home.root, self.channel)
            if self.static is None:
                self.static = production  # the first champion, never replaced
        period = PeriodResult(
            start=rows.start, stop=rows.stop,
            post_drift=self.drift_from_row is not None and rows.start >= self.drift_from_row,
            step=step, serving_id=production.candidate_id if production else "",
            serving_slice=str(self.store.get_candidate(production.candidate_id).slice_id)
            if production else "(nothing promoted yet)")
        acc = period.accuracy
        if production is not None and self.static is not None:
            acc["system"] = self.scorer.deployed(production, rows)
            acc["static"] = self.scorer.deployed(self.static, rows)
        for suffix in ABLATIONS:
            if (self.home.channels_dir / f"{self.channel}-{suffix}").exists():
                model = read_channel(self.home.root, f"{self.channel}-{suffix}")
                acc[suffix.replace("-", "_")] = self.scorer.deployed(model, rows)
        scores = {cid: self.scorer.candidate(cid, rows)
                  for cid in dict.fromkeys([*self.pool, *self.rules.values(), *self.refits,
                                            *([self.always] if self.always else [])])}
        for slice_id, cid in self.rules.items():
            acc[f"rule:{slice_id}"] = scores[cid]
        picks: dict[str, str | None] = {"always_promote": self.always,
                 "oracle": max(self.pool, key=scores.__getitem__, default=None),
                 "oracle_refit": max(self.refits, key=scores.__getitem__, default=None)}
        for name, pick in picks.items():
            if pick is not None:
                acc[name] = scores[pick]
                period.chosen[name] = str(self.store.get_candidate(pick).slice_id)
        return period

    def _after_sweep(self, step: BoundaryStep, sweep_id: str,
                     challenger: str | None) -> BoundaryStep:
        from dataclasses import replace

        records = ok_candidates(self.store, sweep_id)
        bests = slice_bests(records, stored_baselines(self.store.get_sweep(sweep_id).config))
        refits: dict[str, str] = {}
        errors: dict[str, str] = {}
        if self.refit and records:
            # Rank 1 too: on a tie in accuracy the policy's tie-breakers may pick another of its
            # slice's candidates than slice_bests does, and always-promote deploys rank 1's refit.
            # The sweep's ensemble too, whatever the selection policy: the oracle over refits
            # then chooses among the same refits under every policy.
            ensembles = [r.candidate_id for r in records if r.family == ENSEMBLE_FAMILY]
            refits, errors = refit_all(self.store, list(dict.fromkeys(
                [*([challenger] if challenger else []), *bests.values(), *ensembles])))
        ablations = {}
        if self.settings.ablations and challenger is not None:
            ablations = gate_ablations(self.store, challenger, self.channel, refits,
                                       f"backtest ablation at row {step.boundary}")
        self.pool = [r.candidate_id for r in records]
        self.rules = {s: refits.get(c, c) for s, c in bests.items()}
        self.refits = list(refits.values())
        self.always = refits.get(challenger, challenger) if challenger else None
        return replace(step, candidates_ok=len(records), ablations=ablations, slice_bests=bests,
                       refits=refits, refit_errors=errors)


def _score_online(result: BacktestResult, data: Dataset, progress: Log) -> None:
    """river's learners and the naive baselines on every period, over the same rows."""
    stop = result.periods[-1].stop
    labels = data.labels[:stop]
    started = time.perf_counter()
    per_row = {"no_change": no_change(labels),
               "majority": majority(labels, result.boundaries, result.settings.period)}
    for name, build in ONLINE_LEARNERS.items():
        progress(f"river {name}: prequential over rows 0..{stop - 1}")
        per_row[name] = prequential(build(result.settings.seed), data.features[:stop], labels,
                                    data.feature_names)
    for period in result.periods:
        for name, correct in per_row.items():
            period.accuracy[name] = float(correct[period.start:period.stop].mean())
    result.seconds["online"] = time.perf_counter() - started


def _progress_line(index: int, total: int, period: PeriodResult, result: BacktestResult) -> str:
    step, acc = period.step, period.accuracy
    verdict = ("promoted" if step.promoted else "kept the champion") if step.sweep_id else \
        "no trigger fired"
    nan = float("nan")
    recent = acc.get(f"rule:{result.rule_recent}", nan)
    return (f"[{index + 1}/{total}] row {step.boundary}: {step.action}"
            f"{' (' + ', '.join(step.fired) + ')' if step.fired else ''}, "
            f"{step.candidates_ok} candidates, {verdict} in {step.pass_seconds:.1f} s (serving "
            f"{period.serving_slice}); next period: system {acc.get('system', nan):.3f}, static "
            f"{acc.get('static', nan):.3f}, retrain-recent {recent:.3f}, oracle "
            f"{acc.get('oracle', nan):.3f}, oracle-refit {acc.get('oracle_refit', nan):.3f}")
