"""Planning a sweep: sweep ids, and one deterministic candidate per slice x grid point."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from selection.records import CandidateRecord, utc_now
from shadow.data.slicing.base import Slice


@dataclass(frozen=True)
class CandidateSpec:
    """What one Ray task trains: a family with params on a slice, with a seed."""

    candidate_id: str
    slice_id: str
    family: str
    params: dict[str, Any]
    seed: int
    #: Optuna trial index within its slice's study (None for grid candidates).
    trial: int | None = None
    #: Share of the slice, at its end, held out to score the trial (0: train on all of it).
    validation_fraction: float = 0.0
    #: sha256 of an exported model whose weights training starts from (a warm start), if any;
    #: its bytes travel in ``SweepData.init_models``.
    init_model: str | None = None


def new_sweep_id(now: datetime | None = None) -> str:
    """A sortable, unique sweep id such as ``s-20261122-093015-a1f3``."""
    now = now or utc_now()
    return f"s-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def candidate_id(
    sweep_id: str, dataset_fingerprint: str, piece: Slice, family: str,
    params: dict[str, Any], seed: int,
) -> str:
    """Deterministic id: the same sweep, rows, model and seed give the same id.

    This is what lets a resumed sweep skip finished candidates without duplicates.
    """
    key = json.dumps(
        [sweep_id, dataset_fingerprint, piece.slice_id, piece.rows_sha256, family, params, seed],
        sort_keys=True,
        separators=(",", ":"),
    )
    return "c-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def plan_candidates(
    sweep_id: str, dataset_fingerprint: str, slices: list[Slice], family: str,
    grid: tuple[dict[str, Any], ...], seed: int,
) -> list[CandidateSpec]:
    """Every slice x grid point, slices in order (so early results span the grid)."""
    return [
        CandidateSpec(
            candidate_id(sweep_id, dataset_fingerprint, piece, family, params, seed),
            piece.slice_id,
            family,
            dict(params),
            seed,
        )
        for params in grid
        for piece in slices
    ]


class GridPlanner:
    """Every candidate known up front; nothing to learn from results."""

    def __init__(self, specs: list[CandidateSpec]) -> None:
        self._specs = list(specs)
        self.total = len(self._specs)

    def ready(self) -> list[CandidateSpec]:
        specs, self._specs = self._specs, []
        return specs

    def tell(self, spec: CandidateSpec, record: CandidateRecord) -> None:
        """Grid candidates do not depend on each other's results."""
