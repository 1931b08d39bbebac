"""The gate's decision as a frozen typed record, and its stored JSON form.

``evaluate_gate`` builds one :class:`GateDecision`; ``shadow promote`` stores
:meth:`GateDecision.to_json` with the history row, and
:meth:`GateDecision.from_json` reads such a row back. Both directions live
here, so the stored shape is written once:

.. code-block:: text

    {"passed", "forced", "channel", "device", "decided_at", "ranking_policy",
     "gate_policy", "challenger", "champion", "holdout", "test", "improvement",
     "guards", "checks", "reasons",
     ["forced_reason", "forced_by", "gate_passed"]  # only when forced
     ["refit"],                                     # only when a refit ships
     ["evidence"]}                                  # only when judged on live requests

Readers use the attributes (``decision.passed``, ``decision.check("improvement")``);
the JSON is only the stored form, read back with :meth:`GateDecision.from_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from selection.errors import ConfigError


def _kwargs(cls: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` from ``data`` (a missing key reads as None)."""
    return {f.name: data[f.name] if f.name in data else None for f in fields(cls)}


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate: its name, whether it passed, and why, in words."""

    check: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateCheck:
        return cls(str(data["check"]), bool(data["passed"]), str(data.get("detail", "")))


@dataclass(frozen=True)
class ModelSummary:
    """What the decision says about one model (challenger or champion).

    The last four fields are set only once known: ``history_id`` and
    ``rescored`` for the champion, ``scored_by`` and ``accuracy_on_holdout``
    once both models were scored on the same holdout rows. Unset ones are
    left out of the JSON.
    """

    candidate_id: str
    sweep_id: str
    device: str | None
    accuracy: float | None
    latency_ms: float | None
    size_bytes: int | None
    sha256: str | None
    history_id: int | None = None
    rescored: bool | None = None
    scored_by: str | None = None
    accuracy_on_holdout: float | None = None

    _OPTIONAL = ("history_id", "rescored", "scored_by", "accuracy_on_holdout")

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in out.items() if k not in self._OPTIONAL or v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSummary:
        return cls(**_kwargs(cls, data))


@dataclass(frozen=True)
class HoldoutUsed:
    """The holdout both models were scored on."""

    sweep_id: str
    data_sha256: str | None
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "data_sha256": self.data_sha256, "rows": self.rows}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HoldoutUsed:
        return cls(str(data["sweep_id"]), data.get("data_sha256"), int(data["rows"]))


@dataclass(frozen=True)
class Improvement:
    """The accuracy comparison on the shared holdout rows (``[gate] require`` says the rule)."""

    challenger_accuracy: float
    champion_accuracy: float
    absolute: float
    require: str
    min_required: float
    max_regression: float | None
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Improvement:
        return cls(**_kwargs(cls, data))


@dataclass(frozen=True)
class PairedTest:
    """The exact McNemar test on the per-row outcomes (``alternative`` is the question asked)."""

    name: str
    alternative: str
    b_challenger_only: int
    c_champion_only: int
    rows: int
    p_value: float
    alpha: float
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairedTest:
        return cls(**_kwargs(cls, data))


@dataclass(frozen=True)
class GuardResult:
    """One guarded metric, challenger vs champion; ``status`` is "pass", "fail" or "skipped"."""

    metric: str
    challenger: float | None
    champion: float | None
    champion_device: str
    max_worse_pct: float
    status: str
    worse_by_pct: float | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuardResult:
        return cls(**_kwargs(cls, data))


@dataclass(frozen=True)
class Override:
    """A person promoted past the gate: who and why (``--force --reason``)."""

    reason: str
    who: str | None


_REQUIRED = ("channel", "device", "decided_at", "challenger", "checks")


@dataclass(frozen=True)
class GateDecision:
    """Everything the gate decided about one challenger, with the evidence.

    ``passed`` is whether every check passed (the gate's verdict, also when a
    person overrode it: see ``override``). ``refit`` is the refit that ships on
    this decision (its lineage summary), if any.
    """

    channel: str
    device: str
    decided_at: str
    ranking_policy: Mapping[str, Any]
    gate_policy: Mapping[str, Any]
    challenger: ModelSummary
    checks: tuple[GateCheck, ...]
    champion: ModelSummary | None = None
    holdout: HoldoutUsed | None = None
    test: PairedTest | None = None
    improvement: Improvement | None = None
    guards: tuple[GuardResult, ...] = ()
    override: Override | None = None
    refit: Mapping[str, Any] | None = field(default=None)
    #: Set when the gate judged on live requests instead of a holdout (``selection.gate.live``):
    #: ``{"kind": "live", "log", "rows", "champion_sha256", "challenger_sha256"}``.
    evidence: Mapping[str, Any] | None = field(default=None)

    @property
    def passed(self) -> bool:
        """Whether the gate passes the challenger (every check passed)."""
        return all(c.passed for c in self.checks)

    @property
    def forced(self) -> bool:
        """Whether a person promoted past the gate."""
        return self.override is not None

    @property
    def reasons(self) -> list[str]:
        """The details of the failed checks, in order."""
        return [c.detail for c in self.checks if not c.passed]

    def check(self, name: str) -> GateCheck | None:
        """The check called ``name``, if the gate ran it."""
        return next((c for c in self.checks if c.check == name), None)

    def to_json(self) -> dict[str, Any]:
        """The form stored with the history row (JSON values only)."""
        out: dict[str, Any] = {
            "passed": self.passed, "forced": self.forced, "channel": self.channel,
            "device": self.device, "decided_at": self.decided_at,
            "ranking_policy": dict(self.ranking_policy), "gate_policy": dict(self.gate_policy),
            "challenger": self.challenger.to_json(),
            "champion": None if self.champion is None else self.champion.to_json(),
            "holdout": None if self.holdout is None else self.holdout.to_json(),
            "test": None if self.test is None else self.test.to_json(),
            "improvement": None if self.improvement is None else self.improvement.to_json(),
            "guards": [g.to_json() for g in self.guards],
            "checks": [c.to_json() for c in self.checks],
            "reasons": self.reasons,
        }
        if self.override is not None:
            out.update(forced_reason=self.override.reason, forced_by=self.override.who,
                       gate_passed=self.passed)
        if self.refit is not None:
            out["refit"] = dict(self.refit)
        if self.evidence is not None:
            out["evidence"] = dict(self.evidence)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateDecision:
        """The decision a history row stored (ConfigError if ``data`` is not one)."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ConfigError(
                f"a stored gate decision has the keys {', '.join(_REQUIRED)} (and more); this one "
                f"lacks {', '.join(missing)} (keys: {', '.join(map(str, data)) or 'none'}); it was "
                "not written by the gate (e.g. `promote(..., decision=...)` from a script)"
            )

        def opt(key: str, kind: Any) -> Any:
            value = data.get(key)
            return None if value is None else kind.from_json(value)

        override = None
        if data.get("forced"):
            override = Override(str(data.get("forced_reason") or ""), data.get("forced_by"))
        return cls(
            channel=str(data["channel"]), device=str(data["device"]), decided_at=str(data["decided_at"]),
            ranking_policy=dict(data.get("ranking_policy") or {}),
            gate_policy=dict(data.get("gate_policy") or {}),
            challenger=ModelSummary.from_json(data["challenger"]),
            checks=tuple(GateCheck.from_json(c) for c in data["checks"]),
            champion=opt("champion", ModelSummary), holdout=opt("holdout", HoldoutUsed),
            test=opt("test", PairedTest), improvement=opt("improvement", Improvement),
            guards=tuple(GuardResult.from_json(g) for g in data.get("guards") or ()),
            override=override,
            refit=None if data.get("refit") is None else dict(data["refit"]),
            evidence=None if data.get("evidence") is None else dict(data["evidence"]),
        )


__all__ = ["GateCheck", "GateDecision", "GuardResult", "HoldoutUsed", "Improvement", "ModelSummary",
           "Override", "PairedTest"]
