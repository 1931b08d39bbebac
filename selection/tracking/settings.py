"""Where a sweep's candidates are tracked in MLflow: the ``[mlflow]`` table, validated.

::

    [mlflow]
    tracking_uri = "http://127.0.0.1:5000"   # else --mlflow URI, else $MLFLOW_TRACKING_URI
    experiment = "noaa-demo"                 # default: the sweep's [sweep] name
    registered_model = "noaa-weather"        # default: "<dataset>-<channel>"
    # enabled = false                        # tracking off: $MLFLOW_TRACKING_URI is ignored too

The sweep stores this table in its config (the store's sweep row), so a later
``promote`` or ``rollback`` of one of its candidates knows which registry to move
the ``champion`` alias in without being told again. ``enabled = false`` turns
tracking off for the sweep and for every later promotion of its candidates,
whatever ``$MLFLOW_TRACKING_URI`` says (only ``--mlflow URI`` still wins): the
backtest's simulated sweeps carry it, so they never land in a team's
experiment or registry. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selection.errors import ConfigError
from selection.validation import Param, parse_table

#: The environment variable MLflow itself reads; the last place a tracking URI is taken from.
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
#: The alias that follows the channel's model in the registered model.
CHAMPION_ALIAS = "champion"
#: URI schemes that name a tracking server (the test and team set-up) or a local store.
_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "file", "databricks")
# Registered model and experiment names: printable, no slash (MLflow's URIs split on it), no
# quote or backtick (they are quoted in MLflow's search filters).
_NAME = re.compile(r"^[^/'\"`\x00-\x1f]{1,200}$")

_PARAMS = [
    Param("tracking_uri", str, default="",
          help="the MLflow tracking server, e.g. http://127.0.0.1:5000"),
    Param("experiment", str, default="", help="experiment of the sweep's runs (default: the sweep name)"),
    Param("registered_model", str, default="",
          help="registered model whose 'champion' alias follows the channel (default: DATASET-CHANNEL)"),
    Param("enabled", bool, default=True,
          help="false turns tracking off, $MLFLOW_TRACKING_URI included (the backtest sets it)"),
]


@dataclass(frozen=True)
class MlflowSettings:
    """A validated ``[mlflow]`` table; empty strings mean "the default"."""

    tracking_uri: str
    experiment: str = ""
    registered_model: str = ""
    #: False: tracking is off (``[mlflow] enabled = false``); :func:`resolve` then gives None.
    enabled: bool = True

    def experiment_for(self, sweep_name: str) -> str:
        """The experiment a sweep named ``sweep_name`` logs its candidates under."""
        return self.experiment or sweep_name

    def model_name_for(self, dataset: str, channel: str) -> str:
        """The registered model of ``channel`` for a candidate of ``dataset``."""
        name = self.registered_model or f"{dataset}-{channel}"
        if not _NAME.match(name):
            raise ConfigError(f"[mlflow]: the registered model name {name!r} is not one MLflow can "
                              "search for; set [mlflow] registered_model to a plain name")
        return name

    def to_table(self) -> dict[str, Any]:
        """The ``[mlflow]`` table as the sweep's stored config keeps it."""
        if not self.enabled:
            return dict(TRACKING_OFF)
        table: dict[str, Any] = {"tracking_uri": self.tracking_uri}
        if self.experiment:
            table["experiment"] = self.experiment
        if self.registered_model:
            table["registered_model"] = self.registered_model
        return table


#: The ``[mlflow]`` table that turns tracking off (what the backtest stores with its sweeps).
TRACKING_OFF: dict[str, Any] = {"enabled": False}


def settings_from_config(table: Any, where: str) -> MlflowSettings:
    """An ``[mlflow]`` table validated (ConfigError naming the key, the value and the fix).

    ``tracking_uri`` may be left out here and come from ``--mlflow`` or
    ``$MLFLOW_TRACKING_URI``; :func:`resolve` says which applies.
    """
    values = parse_table(table, _PARAMS, where)
    if values["tracking_uri"]:
        check_uri(values["tracking_uri"], where)
    for key in ("experiment", "registered_model"):
        if values[key] and not _NAME.match(values[key]):
            raise ConfigError(f"{where}: {key!r} must be 1-200 printable characters without / ' \" or `; "
                              f"got {values[key]!r}. Rename it.")
    if not values["enabled"] and values["tracking_uri"]:
        raise ConfigError(f"{where}: 'enabled = false' turns tracking off, yet 'tracking_uri' is set; "
                          "drop one of them")
    return MlflowSettings(**values)


def check_uri(uri: str, where: str) -> str:
    """``uri`` if it names a tracking store MLflow can reach, else ConfigError saying so."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme not in _SCHEMES or uri.strip() != uri or len(uri) > 2000:
        raise ConfigError(
            f"{where}: the MLflow tracking URI must start with one of "
            f"{', '.join(s + ':' for s in _SCHEMES)}; got {uri!r}. "
            "Pass the server's address, e.g. http://127.0.0.1:5000."
        )
    if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
        # The URI is stored with the sweep (and shown by `sweep list`): credentials must not be.
        raise ConfigError(
            f"{where}: the MLflow tracking URI must not hold a user name or password (it is "
            "stored with the sweep); set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
            "instead."
        )
    return uri


def resolve(
    table: Mapping[str, Any] | MlflowSettings | None, *, override: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> MlflowSettings | None:
    """The settings in force: ``override`` (``--mlflow``) > the table's URI > ``$MLFLOW_TRACKING_URI``.

    None when none of them names a URI, or when the table says ``enabled =
    false`` (and no ``override`` is given): MLflow is not used. ``table`` is an
    ``[mlflow]`` table (as stored with a sweep) or parsed settings.
    """
    env = os.environ if environ is None else environ
    if isinstance(table, MlflowSettings):
        settings: MlflowSettings | None = table
    elif table is not None:
        settings = settings_from_config(table, "[mlflow]")
    else:
        settings = None
    if settings is not None and not settings.enabled and not override:
        return None  # tracking off: the environment's URI is not a reason to track
    uri = override or (settings.tracking_uri if settings else "") or env.get(ENV_TRACKING_URI, "")
    if not uri:
        return None
    check_uri(uri, "--mlflow" if override else (
        "[mlflow] tracking_uri" if settings and settings.tracking_uri else f"${ENV_TRACKING_URI}"))
    base = settings or MlflowSettings(tracking_uri=uri)
    return MlflowSettings(uri, base.experiment, base.registered_model)
