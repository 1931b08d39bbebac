"""The gate's thresholds: :class:`GatePolicy`, built from a sweep file's ``[gate]`` table.

Both the checks (``selection.gate.checks``) and the decision
(``selection.gate.decision``) read it; it imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selection.errors import ConfigError
from selection.gate.stats import ALTERNATIVES, Alternative
from selection.ranking.policies import METRIC_DIRECTIONS

#: What a challenger must show against the champion on the holdout (``[gate] require``).
REQUIREMENTS = ("improvement", "no-regression")


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate; build from a sweep file with :func:`gate_from_config`."""

    min_improvement: float = 0.0
    alpha: float = 0.05
    alternative: Alternative = "greater"
    #: metric -> the most it may get worse, in percent of the champion's value.
    guards: Mapping[str, float] = field(default_factory=lambda: {"latency_ms": 10.0})
    #: "improvement" (significantly better) or "no-regression" (not significantly worse and,
    #: if set, at most ``max_regression`` lower): see ``checks.comparison_checks``.
    require: str = "improvement"
    max_regression: float | None = None

    def __post_init__(self) -> None:
        if not _number(self.min_improvement) or not 0 <= self.min_improvement <= 1:
            raise ConfigError(f"[gate] min_improvement must be a number in [0, 1] (absolute "
                              f"accuracy); got {self.min_improvement!r}; e.g. 0.01")
        if not _number(self.alpha) or not 0 < self.alpha < 1:
            raise ConfigError(f"[gate] alpha must be a number in (0, 1); got {self.alpha!r}; e.g. 0.05")
        if self.require not in REQUIREMENTS:
            raise ConfigError(f"[gate] require must be one of {', '.join(REQUIREMENTS)}; got "
                              f"{self.require!r}; e.g. \"no-regression\" when shipping refits")
        if self.max_regression is not None and (
                not _number(self.max_regression) or not 0 <= self.max_regression <= 1):
            raise ConfigError(f"[gate] max_regression must be a number in [0, 1] (absolute "
                              f"accuracy); got {self.max_regression!r}; e.g. 0.01")
        if self.alternative not in ALTERNATIVES:
            raise ConfigError(f"[gate] alternative must be one of {', '.join(ALTERNATIVES)}; "
                              f"got {self.alternative!r}")
        if not isinstance(self.guards, Mapping):
            raise ConfigError(f"[gate] guards must be a table metric = max % worse; got {self.guards!r}")
        for metric, pct in self.guards.items():
            if metric not in METRIC_DIRECTIONS:
                raise ConfigError(f"[gate.guards] metric must be one of {', '.join(METRIC_DIRECTIONS)}; "
                                  f"got {metric!r}")
            if not _number(pct) or not 0 <= pct < math.inf:  # nan and inf are no limit
                raise ConfigError(f"[gate.guards] {metric} must be a finite percentage >= 0; "
                                  f"got {pct!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in gate decisions as ``gate_policy``)."""
        return {"min_improvement": self.min_improvement, "alpha": self.alpha,
                "alternative": self.alternative, "test": "mcnemar-exact",
                "guards": dict(self.guards), "require": self.require,
                "max_regression": self.max_regression}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_GATE_KEYS = ("min_improvement", "alpha", "alternative", "guards", "require", "max_regression")


def gate_from_config(table: Mapping[str, Any], where: str) -> GatePolicy:
    """A GatePolicy from a ``[gate]`` TOML table; unknown keys are errors."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table of gate settings; got {table!r}")
    unknown = sorted(set(table) - set(_GATE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(_GATE_KEYS)}")
    values = dict(table)
    if "guards" in values and isinstance(values["guards"], Mapping):
        values["guards"] = dict(values["guards"])
    try:
        return GatePolicy(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


__all__ = ["REQUIREMENTS", "GatePolicy", "gate_from_config"]
