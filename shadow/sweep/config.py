"""Sweep configuration: a TOML file validated into a frozen SweepConfig.

Example (``datasets/noaa-weather/sweep.toml``)::

    [sweep]
    name = "noaa-demo"
    dataset = "noaa-weather"
    devices = ["host-cpu"]
    seed = 0

    [holdout]
    rows = 1095              # the last three years; never trained on

    [[slices]]
    strategy = "recent"
    rows = 1825

    [model]
    family = "mlp"

    [model.params]           # a list means "try each": the grid is their product
    width = [16, 64]
    epochs = 15

Every key is checked when the file is read; unknown keys are errors listing
the known ones. Nothing starts (no Ray, no store write) until the whole file
is valid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selection.gate.decision import gate_from_config
from selection.ranking.policies import policy_from_config
from selection.tracking.settings import MlflowSettings, settings_from_config
from selection.validation import Param, check_known_keys, parse_table, read_toml
from shadow.data.slicing.base import SliceStrategy, build_strategy
from shadow.devices import get_device
from shadow.errors import ConfigError
from shadow.models import get_family
from shadow.sweep.search import SearchConfig, parse_search
from shadow.sweep.watch_config import WatchConfig, watch_from_config

#: More candidates than this in one sweep is almost surely a typo in the grid.
MAX_CANDIDATES = 10_000
#: Seeds reach numpy (``default_rng``, ``RandomState``) and torch (``manual_seed``):
#: 0..2**32-1 is what all of them accept.
MAX_SEED = 2**32 - 1

_SWEEP = [
    Param("name", str, default="sweep"),
    Param("dataset", str),
    Param("devices", list, default=["host-cpu"]),
    Param("seed", int, default=0, low=0, high=MAX_SEED),
    Param("max_in_flight", int, default=0, low=0, high=100_000,
          help="candidates running at once (0: twice the cluster's CPUs)"),
]
_MODEL = [Param("family", str), Param("params", dict, default={}),
          Param("baselines", list, default=[],
                help="built-in families also trained with their defaults on every slice")]
#: Families a sweep may add as baselines (``[model] baselines``): cheap, parameter-free references.
BASELINE_FAMILIES = ("prior",)
#: Most members one ensemble may combine (each is one more model in the graph, on the device).
MAX_ENSEMBLE = 16
_ENSEMBLE = [
    Param("top_k", int, default=3, low=2, high=MAX_ENSEMBLE,
          help="members: the sweep's best candidates by its ranking policy, one per slice first"),
    Param("weights", str, default="holdout", choices=("holdout", "uniform"),
          help="'holdout': by each member's holdout error (log-odds); 'uniform': equal"),
]


_WARM_START = [
    Param("channel", str, default="production",
          help="the channel whose champion the warm start continues training"),
    Param("rows", int, default=None, low=1,
          help="the newest rows before the holdout it trains on (default: as many as the holdout)"),
    Param("epochs", int, default=3, low=1, high=1000, help="epochs over those rows"),
    Param("lr_scale", float, default=0.3, low=0.0, high=1.0, low_open=True,
          help="the champion's learning rate times this (a smaller step: it starts trained)"),
]


@dataclass(frozen=True)
class WarmStartConfig:
    """``[warm_start]``: the sweep also continues training the channel's champion on the newest rows."""

    channel: str = "production"
    #: None: as many rows as the holdout holds.
    rows: int | None = None
    epochs: int = 3
    lr_scale: float = 0.3


@dataclass(frozen=True)
class EnsembleConfig:
    """``[ensemble]``: after its candidates, the sweep combines its top ones into one model."""

    top_k: int = 3
    weights: str = "holdout"


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: what data, which slices, which models, which devices."""

    name: str
    dataset: str
    devices: tuple[str, ...]
    seed: int
    max_in_flight: int
    holdout: dict[str, Any]
    slices: tuple[SliceStrategy, ...]
    family: str
    grid: tuple[dict[str, Any], ...]
    path: Path | None
    raw: dict[str, Any]
    #: Optuna search per slice instead of the grid (``[search]``), if configured.
    search: SearchConfig | None = None
    #: ``[model.params]`` as written (no defaults): what every search trial shares.
    fixed_params: dict[str, Any] | None = None
    #: The continuous loop's channel, mode and triggers (``[watch]``), if configured.
    watch: WatchConfig | None = None
    #: The ensemble of the sweep's top candidates (``[ensemble]``), if configured.
    ensemble: EnsembleConfig | None = None
    #: Where the candidates are tracked in MLflow (``[mlflow]``), if configured in the file.
    mlflow: MlflowSettings | None = None
    #: The champion continued on the newest rows (``[warm_start]``), if configured.
    warm_start: WarmStartConfig | None = None
    #: Baseline families trained with their defaults on every slice beside the sweep's own
    #: (``[model] baselines``), each with its validated params.
    baselines: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def base_dir(self) -> Path:
        """Folder relative paths in the config (a dataset.toml) are taken from."""
        return self.path.parent if self.path else Path.cwd()


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file."""
    path = Path(path)
    raw = read_toml(
        path, "sweep config", "pass a TOML file such as datasets/noaa-weather/sweep.toml.",
        "pass its sweep.toml.",
    )
    return config_from_dict(raw, path)


def config_from_dict(raw: dict[str, Any], path: Path | None = None) -> SweepConfig:
    """Validate an already-parsed config (used by tests and the Python API)."""
    where = str(path) if path else "sweep config"
    _refuse_nul(raw, where)
    check_known_keys(
        raw, ["sweep", "holdout", "slices", "model", "search", "ranking", "gate", "watch", "ensemble",
              "mlflow", "warm_start"],
        where,
    )
    # Ranking and gate settings belong to selection; it validates them, and reads
    # them back from the stored sweep config when ranking or promoting.
    if "ranking" in raw:
        policy_from_config(raw["ranking"], f"{where} [ranking]")
    if "gate" in raw:
        gate_from_config(raw["gate"], f"{where} [gate]")
    watch = watch_from_config(raw["watch"], where) if "watch" in raw else None
    ensemble = None
    if "ensemble" in raw:
        ensemble = EnsembleConfig(**parse_table(raw["ensemble"], _ENSEMBLE, f"{where} [ensemble]"))
    mlflow = settings_from_config(raw["mlflow"], f"{where} [mlflow]") if "mlflow" in raw else None
    warm_start = None
    if "warm_start" in raw:
        warm_start = WarmStartConfig(**parse_table(raw["warm_start"], _WARM_START,
                                                   f"{where} [warm_start]"))
    for required in ("sweep", "holdout", "slices", "model"):
        if required not in raw:
            raise ConfigError(f"{where}: missing [{required}] section; see datasets/*/sweep.toml.")
    if watch is not None and watch.selection.policy == "ensemble":
        _check_ensemble_policy(ensemble, warm_start, where)
    sweep = parse_table(raw["sweep"], _SWEEP, f"{where} [sweep]")
    devices = tuple(sweep["devices"])
    if not devices or not all(isinstance(d, str) for d in devices) or len(set(devices)) != len(devices):
        raise ConfigError(
            f"{where} [sweep]: 'devices' must list distinct device names such as "
            f"[\"host-cpu\"]; got {list(devices)!r}."
        )
    for name in devices:
        get_device(name, f"{where} [sweep] devices")
    if not isinstance(raw["holdout"], dict):
        raise ConfigError(f"{where}: [holdout] must be a table such as `rows = 1000`.")
    slice_tables = raw["slices"]
    if not isinstance(slice_tables, list) or not slice_tables:
        raise ConfigError(f"{where}: [[slices]] must list at least one slice strategy.")
    strategies = tuple(
        build_strategy(table, f"{where} [[slices]] #{i + 1}") for i, table in enumerate(slice_tables)
    )
    model = parse_table(raw["model"], _MODEL, f"{where} [model]")
    family = get_family(model["family"], f"{where} [model]")
    baselines = _baselines(model["baselines"], model["family"], f"{where} [model] baselines")
    search = None
    if "search" in raw:
        listed = [k for k, v in model["params"].items() if isinstance(v, list)]
        if listed:
            raise ConfigError(
                f"{where} [model.params]: {', '.join(repr(k) for k in listed)} list several values, "
                "but [search] is set; give ranges in [search.space] instead."
            )
        search = parse_search(raw["search"], family, model["params"], f"{where} [search]")
    # The size first, from the list lengths: expanding four keys of 100 values
    # would build 10**8 dicts (gigabytes) before a check on the result.
    size = grid_size(model["params"])
    if size > MAX_CANDIDATES:
        raise ConfigError(
            f"{where} [model.params]: the grid has {size} points (> {MAX_CANDIDATES}); "
            "use fewer values per key."
        )
    grid = tuple(
        family.validate(point, f"{where} [model.params]")
        for point in expand_grid(model["params"])
    )
    return SweepConfig(
        name=sweep["name"],
        dataset=sweep["dataset"],
        devices=devices,
        seed=sweep["seed"],
        max_in_flight=sweep["max_in_flight"],
        holdout=dict(raw["holdout"]),
        slices=strategies,
        # As written: a built-in's name, or the import path every worker resolves again.
        family=model["family"],
        grid=grid,
        path=path,
        raw=raw,
        search=search,
        fixed_params=dict(model["params"]),
        watch=watch,
        ensemble=ensemble,
        mlflow=mlflow,
        warm_start=warm_start,
        baselines=baselines,
    )


def _check_ensemble_policy(ensemble: EnsembleConfig | None, warm_start: WarmStartConfig | None,
                           where: str) -> None:
    """``[watch.selection] policy = "ensemble"`` needs an ensemble, and leaves a warm start idle."""
    if ensemble is None:
        raise ConfigError(
            f"{where} [watch.selection]: policy = \"ensemble\" gates the sweep's ensemble of its "
            "top candidates, but the file has no [ensemble] table; add `[ensemble]` with "
            "`top_k = 3`, or choose policy = \"holdout\"")
    if warm_start is not None:
        # The champion would be an ensemble, which is never warm-started: the table would
        # only look like an experiment.
        raise ConfigError(
            f"{where} [warm_start]: it continues the champion, but under [watch.selection] "
            "policy = \"ensemble\" the champion is an ensemble, which is never warm-started; "
            "remove [warm_start], or choose policy = \"holdout\"")


def _baselines(names: list[Any], family: str, where: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """``[model] baselines``: known baseline families, each once, not the sweep's own family."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        if name not in BASELINE_FAMILIES:
            raise ConfigError(f"{where}: {name!r} is not a baseline family; the baselines are "
                              f"{', '.join(map(repr, BASELINE_FAMILIES))}, e.g. baselines = [\"prior\"].")
        if name == family or name in (n for n, _ in out):
            raise ConfigError(f"{where}: {name!r} is listed twice (or is the sweep's [model] family); "
                              "list each baseline once.")
        out.append((name, get_family(name).validate({}, where)))
    return tuple(out)


def stored_baselines(config: Mapping[str, Any]) -> frozenset[str]:
    """The baseline families of a stored sweep's config (``SweepRecord.config``), for readers of
    its candidates: ``[model] baselines`` less the sweep's own family."""
    model = config.get("model") or {}
    return frozenset(model.get("baselines") or ()) - {model.get("family")}


def grid_size(params: dict[str, Any]) -> int:
    """How many points :func:`expand_grid` would build, computed without building them."""
    return math.prod(len(v) if isinstance(v, list) else 1 for v in params.values())


def _refuse_nul(value: Any, where: str) -> None:
    """ConfigError if any text in the config holds a NUL character (TOML can write ``\\u0000``).

    Names, devices and parameters end up in the store, in file names and on
    terminals; none of them means anything with a NUL in it.
    """
    if isinstance(value, str):
        if "\x00" in value:
            raise ConfigError(f"{where}: text must not contain a NUL character (\\u0000); got "
                              f"{value[:60]!r}; remove it.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, where)
            _refuse_nul(item, where)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul(item, where)


def expand_grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product of list-valued keys; scalar keys are fixed.

    ``{"width": [16, 64], "epochs": 10}`` -> two points.
    """
    keys = sorted(params)
    choices = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    for key, values in zip(keys, choices):
        if not values:
            raise ConfigError(f"[model.params]: '{key}' is an empty list; give at least one value.")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(
                f"[model.params]: '{key}' lists a value twice ({values!r}); each value once."
            )
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]
