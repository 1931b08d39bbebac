"""Optuna search per slice, driven from the driver with ask/tell.

Each slice gets its own study. Trials are asked in *generations* of
``parallel`` per slice: a slice's next generation is asked only after its
previous one was told. Slices interleave, so Ray stays busy across slices,
while the parameters a trial gets depend only on earlier generations' results,
never on which task happened to finish first: a sweep with a seed is
reproducible. The objective is accuracy on a validation split cut from the end
of the slice, never the holdout (tuning on the holdout would make the
leaderboard's holdout scores optimistic).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from selection.records import CandidateRecord
from selection.validation import Param, check_known_keys, parse_table
from shadow.data.slicing.base import Slice
from shadow.errors import ConfigError
from shadow.models.base import ModelFamily
from shadow.sweep.plan import CandidateSpec, candidate_id

SEARCH_PARAMS = [
    Param("trials", int, low=1, high=10_000, help="trials per slice"),
    Param("parallel", int, default=2, low=1, high=1024, help="trials per slice per generation"),
    Param("sampler", str, default="tpe", choices=("tpe", "random")),
    Param("validation_fraction", float, default=0.2, low=0.05, high=0.5,
          help="end of each slice held out as the objective"),
    Param("space", dict),
]


@dataclass(frozen=True)
class SearchConfig:
    """A validated ``[search]`` table: budget, sampler and the space per parameter."""

    trials: int
    parallel: int
    sampler: str
    validation_fraction: float
    space: dict[str, optuna.distributions.BaseDistribution]


def parse_search(table: Any, family: ModelFamily, fixed: Mapping[str, Any], where: str) -> SearchConfig:
    """Validate ``[search]`` against the family's declared parameters."""
    spec = parse_table(table, SEARCH_PARAMS, where)
    declared = {p.name: p for p in family.params}
    space: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, bounds in spec["space"].items():
        at = f"{where} [search.space] {name!r}"
        if name not in declared:
            raise ConfigError(
                f"{at}: not a parameter of family {family.name!r}; it has "
                f"{', '.join(sorted(declared))}."
            )
        if name in fixed:
            raise ConfigError(f"{at}: also fixed in [model.params]; keep it in one place.")
        space[name] = _distribution(bounds, declared[name], at)
    if not space:
        raise ConfigError(f"{where}: [search.space] is empty; give at least one parameter range.")
    return SearchConfig(spec["trials"], spec["parallel"], spec["sampler"],
                        spec["validation_fraction"], space)


def _distribution(bounds: Any, param: Param, at: str) -> optuna.distributions.BaseDistribution:
    """``{choices = [...]}`` or ``{low, high[, log][, step]}``, each value checked against the family."""
    if not isinstance(bounds, Mapping):
        raise ConfigError(f"{at}: give {{ low = ..., high = ... }} or {{ choices = [...] }}.")
    if "choices" in bounds:
        if set(bounds) != {"choices"} or not isinstance(bounds["choices"], list) or not bounds["choices"]:
            raise ConfigError(f"{at}: a categorical range is {{ choices = [a, b, ...] }} alone.")
        return optuna.distributions.CategoricalDistribution(
            [param.check(v, at) for v in bounds["choices"]]
        )
    check_known_keys(bounds, ("low", "high", "log", "step"), at)
    if not {"low", "high"} <= set(bounds):
        raise ConfigError(f"{at}: a range needs 'low' and 'high' (optional 'log', 'step'); got {dict(bounds)}.")
    low, high = param.check(bounds["low"], at), param.check(bounds["high"], at)
    if low >= high:
        raise ConfigError(f"{at}: 'low' ({low}) must be below 'high' ({high}).")
    if param.kind not in (int, float):
        raise ConfigError(f"{at}: {param.kind.__name__} parameters take {{ choices = [...] }}.")
    # 'log' and 'step' are checked like every other setting (a string 'step' or a
    # nan one would otherwise reach optuna and come back as a traceback).
    options = parse_table(
        {k: v for k, v in bounds.items() if k in ("log", "step")},
        [Param("log", bool, default=False),
         Param("step", param.kind, default=1 if param.kind is int else None,
               low=0, low_open=True, high=high - low)],
        at,
    )
    stepped = options["step"] != 1 if param.kind is int else options["step"] is not None
    if options["log"] and (low <= 0 or stepped):
        raise ConfigError(f"{at}: a log range needs 'low' > 0 and no 'step'; got low = {low}, "
                          f"step = {options['step']}.")
    if param.kind is int:
        return optuna.distributions.IntDistribution(low, high, log=options["log"],
                                                    step=options["step"])
    return optuna.distributions.FloatDistribution(low, high, log=options["log"],
                                                  step=options["step"])


class SearchPlanner:
    """Asks trials per slice in generations and tells them their validation accuracy."""

    def __init__(
        self, search: SearchConfig, slices: list[Slice], family: str, fixed: dict[str, Any],
        family_params: ModelFamily, sweep_id: str, fingerprint: str, seed: int,
        stored: list[CandidateRecord] = (),  # type: ignore[assignment]
    ) -> None:
        self.search, self.family, self.fixed = search, family, fixed
        self.family_params = family_params
        self.sweep_id, self.fingerprint, self.seed = sweep_id, fingerprint, seed
        self.slices = {s.slice_id: s for s in slices}
        self.studies = {s.slice_id: self._study(s.slice_id) for s in slices}
        self.asked: dict[str, int] = {s.slice_id: 0 for s in slices}
        # Trial indices name candidates; after a resume they continue past the stored ones.
        self.next_index: dict[str, int] = {s.slice_id: 0 for s in slices}
        self.pending: dict[str, dict[str, optuna.trial.Trial]] = {s.slice_id: {} for s in slices}
        for record in sorted(stored, key=lambda r: r.lineage.get("trial", 0)):
            self._replay(record)

    @property
    def total(self) -> int:
        return self.search.trials * len(self.slices)

    def ready(self) -> list[CandidateSpec]:
        """The next generation of every slice whose previous one is fully told."""
        specs = []
        for slice_id, study in self.studies.items():
            if self.pending[slice_id]:
                continue
            room = min(self.search.parallel, self.search.trials - self.asked[slice_id])
            for _ in range(room):
                specs.append(self._ask(slice_id, study))
        return specs

    def tell(self, spec: CandidateSpec, record: CandidateRecord) -> None:
        trial = self.pending[spec.slice_id].pop(spec.candidate_id)
        value = record.lineage.get("validation_accuracy")
        study = self.studies[spec.slice_id]
        if record.status == "ok" and value is not None:
            study.tell(trial, float(value))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _study(self, slice_id: str) -> optuna.Study:
        # A seed per slice derived from the sweep seed: slices explore independently
        # yet every run of the same sweep asks the same trials.
        digest = hashlib.sha256(f"{self.seed}/{slice_id}".encode()).digest()
        seed = int.from_bytes(digest[:4], "big")
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.TPESampler(seed=seed) if self.search.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=seed)
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # library code must stay quiet
        return optuna.create_study(direction="maximize", sampler=sampler)

    def _ask(self, slice_id: str, study: optuna.Study) -> CandidateSpec:
        trial = study.ask(self.search.space)
        index = self.next_index[slice_id]
        self.asked[slice_id] += 1
        self.next_index[slice_id] += 1
        spec = self.spec_for(slice_id, {**self.fixed, **trial.params}, index)
        self.pending[slice_id][spec.candidate_id] = trial
        return spec

    def spec_for(self, slice_id: str, params: dict[str, Any], index: int) -> CandidateSpec:
        """The candidate for trial ``index`` of a slice with these (searched + fixed) params."""
        params = self.family_params.validate(params, "[search]")
        piece = self.slices[slice_id]
        cid = candidate_id(self.sweep_id, self.fingerprint, piece, self.family,
                           {**params, "__trial": index}, self.seed)
        return CandidateSpec(cid, slice_id, self.family, params, self.seed, trial=index,
                             validation_fraction=self.search.validation_fraction)

    def _replay(self, record: CandidateRecord) -> None:
        """Feed a trial stored before a crash back to its study (resume)."""
        if record.slice_id not in self.studies:
            return
        searched = {k: record.params[k] for k in self.search.space if k in record.params}
        value = record.lineage.get("validation_accuracy")
        state = optuna.trial.TrialState.COMPLETE if record.status == "ok" and value is not None \
            else optuna.trial.TrialState.FAIL
        self.studies[record.slice_id].add_trial(optuna.trial.create_trial(
            params=searched, distributions=self.search.space, state=state,
            value=float(value) if value is not None and state == optuna.trial.TrialState.COMPLETE else None,
        ))
        index = int(record.lineage.get("trial", self.next_index[record.slice_id]))
        self.asked[record.slice_id] += 1
        self.next_index[record.slice_id] = max(self.next_index[record.slice_id], index + 1)
