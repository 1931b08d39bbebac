"""Per-row predictions of two models on the *same* holdout rows.

A sweep stores its holdout rows (``SweepRecord.holdout.data_sha256``) and
every device result its per-row predictions (``predictions_sha256``). When
the champion comes from a sweep with the same holdout, its stored
predictions are used; otherwise its promoted model is re-scored on the
challenger's holdout (``selection.gate.rescore``), so the paired test always
compares like with like.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from selection.artifacts.arrays import decode_array, decode_holdout
from selection.errors import IntegrityError, NotFoundError, PromotionError
from selection.gate.rescore import predict_classes
from selection.records import CandidateRecord, SweepRecord
from selection.store import Store


@dataclass(frozen=True)
class Holdout:
    """The rows both models are judged on."""

    sweep_id: str
    data_sha256: str
    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Scored:
    """One model's predicted class per holdout row, and where they came from."""

    predictions: np.ndarray
    model_sha256: str
    rescored: bool
    source: str

    def accuracy(self, labels: np.ndarray) -> float:
        return float(np.mean(self.predictions == labels))


def load_holdout(store: Store, sweep: SweepRecord) -> Holdout:
    """The holdout rows of ``sweep``; PromotionError if the sweep stored none."""
    sha = sweep.holdout.data_sha256
    if sha is None:
        raise PromotionError(
            f"the gate compares models row by row on the holdout, but sweep {sweep.sweep_id!r} "
            "stored no holdout data (made by an older shadow-sweep); re-run the sweep, or "
            "promote with --force --reason TEXT"
        )
    features, labels = decode_holdout(store.artifacts.read_verified(sha))
    return Holdout(sweep.sweep_id, sha, features, labels)


def _stored(store: Store, candidate: CandidateRecord, device: str, n_rows: int) -> np.ndarray | None:
    result = candidate.device(device)
    if result is None or result.predictions_sha256 is None:
        return None
    predictions = decode_array(store.artifacts.read_verified(result.predictions_sha256))
    return predictions.astype(np.int64) if predictions.shape == (n_rows,) else None


def score(
    store: Store, candidate: CandidateRecord, device: str, model_sha256: str,
    candidate_sweep: SweepRecord, holdout: Holdout,
) -> Scored:
    """``candidate``'s predictions on ``holdout`` for its model ``model_sha256`` on ``device``.

    Stored predictions when ``candidate_sweep`` used the same holdout rows;
    otherwise the model is re-scored with ONNX Runtime on CPU (falling back
    to the candidate's fp32 export when the device artifact cannot run on a
    CPU, e.g. a compiled context binary).
    """
    n_rows = len(holdout.labels)
    if candidate_sweep.holdout.data_sha256 == holdout.data_sha256:
        stored = _stored(store, candidate, device, n_rows)
        if stored is not None:
            return Scored(stored, model_sha256, False,
                          f"stored predictions on {device} (same holdout rows)")
    model_io = candidate.lineage.get("model_io", {}) if isinstance(candidate.lineage, dict) else {}
    _check_features(candidate, model_io, holdout)
    tried: list[str] = []
    for sha in dict.fromkeys(s for s in (model_sha256, candidate.onnx_sha256) if s):
        try:
            predictions = predict_classes(store.artifacts.read_verified(sha), holdout.features, model_io)
        except (IntegrityError, NotFoundError) as exc:
            tried.append(f"{sha[:12]}: {exc}")
            continue
        what = "its shipped model" if sha == model_sha256 else "its fp32 export"
        return Scored(predictions, sha, True,
                      f"re-scored {what} ({sha[:12]}) with ONNX Runtime CPU on the holdout of "
                      f"sweep {holdout.sweep_id!r}")
    raise PromotionError(
        f"candidate {candidate.candidate_id!r} could not be re-scored on the holdout of sweep "
        f"{holdout.sweep_id!r} ({'; '.join(tried) or 'no model artifact'}); promote with "
        "--force --reason TEXT if you accept an unpaired comparison"
    )


def _check_features(candidate: CandidateRecord, model_io: dict, holdout: Holdout) -> None:
    expected = model_io.get("features")
    if isinstance(expected, list) and len(expected) != holdout.features.shape[1]:
        raise PromotionError(
            f"candidate {candidate.candidate_id!r} takes {len(expected)} features "
            f"({', '.join(map(str, expected))}) but the holdout of sweep {holdout.sweep_id!r} "
            f"has {holdout.features.shape[1]}; the two models see different data, so they "
            "cannot be compared row by row; promote with --force --reason TEXT if intended"
        )


def _row_digests(features: np.ndarray) -> list[bytes]:
    """One sha256 per row of feature values (rows of any shape)."""
    rows = np.ascontiguousarray(features).reshape(len(features), -1)
    return [hashlib.sha256(row.tobytes()).digest() for row in rows]


def rows_trained_on(store: Store, candidate: CandidateRecord, holdout: Holdout) -> int:
    """How many of ``holdout``'s rows ``candidate`` was trained on.

    A sweep's candidates never train on a holdout; a *refit* trains on its
    sweep's holdout too (``lineage["refit"]["holdout_data_sha256"]``), so a
    later holdout that repeats those rows would judge it on rows it has seen.
    Rows are matched by their feature values, so this holds across datasets
    re-read or extended since (each boundary of a drift replay, say).
    """
    refit = candidate.refit
    absorbed = refit.get("holdout_data_sha256") if refit else None
    if not absorbed:
        return 0
    if absorbed == holdout.data_sha256:
        return int(len(holdout.labels))
    seen, _ = decode_holdout(store.artifacts.read_verified(str(absorbed)))
    if seen.shape[1:] != holdout.features.shape[1:]:
        return 0  # other features: no row can be the same
    trained = set(_row_digests(seen))
    return sum(digest in trained for digest in _row_digests(holdout.features))
