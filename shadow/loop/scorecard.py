"""The champion's scorecard: each new labelled batch scored by the production model as deployed.

The model scored is the version the channel link points at, loaded with
:func:`selection.runtime.load_version`: the same ``model.onnx`` bytes
(verified against the manifest's sha256), the same ONNX Runtime session and
the same input contract an edge app uses. Features are fed raw (any scaling
lives inside the graph), in the manifest's feature-column order, checked by
the rule :func:`selection.runtime.parse_rows` applies to a request (every
value finite and within the model's float type) and cast to that type.

**The caller's contract: only rows the champion never saw.** A batch must
hold rows past the champion's sweep's holdout stop (``HoldoutRecord.stop``):
every row before it was either in a training slice or in the holdout the
champion was chosen (or, refitted, trained) on. :meth:`ChampionScorer.from_store`
reads that stop; a batch given with ``first_row`` (its first row's index in
the dataset's time order) below it is refused. A batch without ``first_row``
is taken on the caller's word.

Confidence intervals are Wilson score intervals (standard library ``math``
and ``statistics``): exact enough for batches of tens of rows (its coverage
stays close to nominal where the normal "Wald" interval collapses), and
defined at accuracy 0 and 1, where the Wald interval has width zero. It needs
no scipy, unlike the exact Clopper-Pearson interval.

One scorer scores one version: when the channel moves, a new champion starts
a new scorecard (its window says nothing about the old one).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selection.channels.layout import resolve_channel
from selection.errors import ConfigError, NotFoundError
from selection.runtime import LoadedModel, NoModelError, load_version

if TYPE_CHECKING:
    from selection.signing import PublicKey
    from selection.store import Store

__all__ = ["BatchResult", "ChampionScorer", "PromotionAccuracy", "Scorecard", "wilson_interval"]

#: Batches pooled in the running window unless the caller says otherwise.
DEFAULT_WINDOW = 5
DEFAULT_CONFIDENCE = 0.95


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE
                    ) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a proportion ``successes / n``."""
    if n <= 0 or not 0 <= successes <= n:
        raise ConfigError(f"a Wilson interval needs 0 <= successes <= n and n > 0; got "
                          f"{successes} of {n}; score at least one row")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1); got {confidence!r}; use e.g. 0.95")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class BatchResult:
    """The champion's accuracy on one batch, with its Wilson interval."""

    batch_id: str | None
    first_row: int | None
    rows: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    #: Rows whose label the model has no output for (counted wrong): a class it never saw.
    unseen_label_rows: int
    #: Per-row error stream (uint8, 1 = wrong) in batch order, for drift detection; not in to_dict.
    errors: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "first_row": self.first_row, "rows": self.rows,
                "correct": self.correct, "accuracy": self.accuracy, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "unseen_label_rows": self.unseen_label_rows}


@dataclass(frozen=True)
class PromotionAccuracy:
    """The champion's holdout accuracy when it was promoted, and where that figure comes from.

    ``rows`` (the holdout's size) is known only from the store; without it
    there is no interval. A refit's own metrics are in-sample (it trained on
    the holdout), so its parent's holdout result is used; without the store a
    refit's accuracy is None rather than an optimistic in-sample figure.
    """

    accuracy: float | None
    rows: int | None
    ci_low: float | None
    ci_high: float | None
    device: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "rows": self.rows, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "device": self.device, "source": self.source}


@dataclass(frozen=True)
class Scorecard:
    """A channel's champion on the batches scored so far: per batch, the window, at promotion."""

    channel: str
    version: str
    candidate_id: str
    sha256: str
    confidence: float
    #: How many of the latest batches the window pools (rows pooled, not accuracies averaged).
    window_batches: int
    batches: tuple[BatchResult, ...]
    window_rows: int
    window_accuracy: float | None
    window_ci_low: float | None
    window_ci_high: float | None
    promotion: PromotionAccuracy
    #: Rows scored in all batches.
    rows: int
    #: First dataset row the champion never saw (its sweep's holdout stop), None if unknown.
    seen_until: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel, "version": self.version, "candidate_id": self.candidate_id,
            "sha256": self.sha256, "confidence": self.confidence,
            "window_batches": self.window_batches,
            "batches": [b.to_dict() for b in self.batches], "window_rows": self.window_rows,
            "window_accuracy": self.window_accuracy, "window_ci_low": self.window_ci_low,
            "window_ci_high": self.window_ci_high, "promotion": self.promotion.to_dict(),
            "rows": self.rows, "seen_until": self.seen_until,
        }


class ChampionScorer:
    """Scores batches with one loaded champion and keeps its scorecard (not thread-safe)."""

    def __init__(self, model: LoadedModel, *, window: int = DEFAULT_WINDOW,
                 confidence: float = DEFAULT_CONFIDENCE, seen_until: int | None = None,
                 promotion: PromotionAccuracy | None = None) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"the scorecard's window must be an integer >= 1 (batches); got "
                              f"{window!r}; use e.g. {DEFAULT_WINDOW}")
        wilson_interval(1, 1, confidence)  # validates confidence once, here
        self.model = model
        self.window = window
        self.confidence = confidence
        self.seen_until = seen_until
        self.promotion = promotion or promotion_from_manifest(model.manifest)
        self._batches: list[BatchResult] = []
        self._recent: deque[BatchResult] = deque(maxlen=window)

    @classmethod
    def open(cls, channels_dir: Path, channel: str = "production", *,
             trusted_keys: dict[str, PublicKey] | None = None, **kwargs: Any) -> ChampionScorer:
        """The scorer of the version ``channels_dir/channel`` points at (no store needed)."""
        return cls(_load(Path(channels_dir), channel, trusted_keys), **kwargs)

    @classmethod
    def from_store(cls, store: Store, channel: str = "production", *,
                   trusted_keys: dict[str, PublicKey] | None = None, **kwargs: Any
                   ) -> ChampionScorer:
        """As :meth:`open`, with the holdout stop and the promotion accuracy read from the store."""
        model = _load(store.home.channels_dir, channel, trusted_keys)
        sweep_id = model.manifest.get("sweep_id")
        try:
            holdout = store.get_sweep(str(sweep_id)).holdout
        except NotFoundError:
            raise NotFoundError(f"channel {channel!r}'s champion {model.candidate_id!r} names "
                                f"sweep {sweep_id!r}, which this store does not hold; open the "
                                "store that promoted it") from None
        promotion = promotion_from_store(store, model.manifest, holdout.n_rows,
                                         kwargs.get("confidence", DEFAULT_CONFIDENCE))
        return cls(model, seen_until=holdout.stop, promotion=promotion, **kwargs)

    def score(self, features: np.ndarray, labels: np.ndarray, *, columns: Sequence[str],
              classes: Sequence[str] | None = None, first_row: int | None = None,
              batch_id: str | None = None) -> BatchResult:
        """Score one labelled batch and add it to the scorecard.

        ``features`` ``(rows, len(columns))`` in the batch's own column order
        (reordered here to the model's); ``labels`` integer class indices,
        into ``classes`` (their texts, matched to the model's class labels)
        when given, else into the model's outputs.
        """
        batch = self._model_input(np.asarray(features), columns)
        labels = np.asarray(labels)
        if labels.shape != (batch.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"a scorecard batch's labels must be {batch.shape[0]} integer class "
                              f"indices; got dtype {labels.dtype}, shape {labels.shape}")
        if first_row is not None and self.seen_until is not None and first_row < self.seen_until:
            raise ConfigError(
                f"a scorecard batch must hold rows the champion never saw (from row "
                f"{self.seen_until}, its holdout stop); batch {batch_id or ''} starts at row "
                f"{first_row}; pass only rows appended after its sweep")
        probabilities = self.model.run(batch)
        truth, unseen = self._targets(labels, probabilities.shape[1], classes)
        predicted = probabilities.argmax(axis=1)
        errors = (predicted != truth).astype(np.uint8)
        n, correct = int(errors.size), int(errors.size - errors.sum())
        low, high = wilson_interval(correct, n, self.confidence)
        result = BatchResult(batch_id, first_row, n, correct, correct / n, low, high, unseen,
                             errors)
        self._batches.append(result)
        self._recent.append(result)
        return result

    def scorecard(self) -> Scorecard:
        """A frozen snapshot of the scorecard so far."""
        rows = sum(b.rows for b in self._recent)
        correct = sum(b.correct for b in self._recent)
        low, high = wilson_interval(correct, rows, self.confidence) if rows else (None, None)
        m = self.model
        return Scorecard(
            channel=m.channel, version=m.version, candidate_id=m.candidate_id, sha256=m.sha256,
            confidence=self.confidence, window_batches=self.window,
            batches=tuple(self._batches), window_rows=rows,
            window_accuracy=correct / rows if rows else None, window_ci_low=low,
            window_ci_high=high, promotion=self.promotion,
            rows=sum(b.rows for b in self._batches), seen_until=self.seen_until)

    def _model_input(self, features: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """The batch as the runtime feeds it: model column order, finite, the model's dtype."""
        m, columns = self.model, list(columns)
        if features.ndim != 2 or features.shape[1] != len(columns) or features.shape[0] == 0:
            raise ConfigError(f"a scorecard batch must be a non-empty (rows, {len(columns)}) array "
                              f"matching its {len(columns)} columns; got shape {features.shape}")
        if m.features:
            missing = [c for c in m.features if c not in columns]
            unknown = [c for c in columns if c not in m.features]
            if missing or unknown or len(set(columns)) != len(columns):
                raise ConfigError(
                    f"a scorecard batch must have exactly the champion's features "
                    f"{list(m.features)}; missing {missing}, unknown {unknown}"
                    f"{', duplicated' if len(set(columns)) != len(columns) else ''}; "
                    "pass the dataset's feature columns")
            features = features[:, [columns.index(c) for c in m.features]]
        elif len(columns) != m.n_features:
            raise ConfigError(f"the champion takes {m.n_features} unnamed columns; the batch has "
                              f"{len(columns)}; pass its feature columns in the model's order")
        try:
            wide = features.astype(np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"a scorecard batch's features must be numbers; got dtype "
                              f"{features.dtype}; pass the loaded dataset's features") from None
        # The runtime's rule (parse_rows): finite, and within the model's float type.
        bad = ~(np.abs(wide) <= float(np.finfo(m.dtype).max))
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            name = m.features[j] if m.features else f"column {j}"
            raise ConfigError(f"every feature value must be a finite {np.dtype(m.dtype).name}; "
                              f"row {i}, {name} is {wide[i, j]}; clean the batch first")
        return np.ascontiguousarray(wide.astype(m.dtype))

    def _targets(self, labels: np.ndarray, out: int, classes: Sequence[str] | None
                 ) -> tuple[np.ndarray, int]:
        """Labels as the model's output indices (-1 where it has none) and how many have none."""
        if classes is not None and self.model.classes:
            lookup = np.array([self.model.classes.index(c) if c in self.model.classes else -1
                               for c in classes] + [-1], dtype=np.int64)
            in_range = (labels >= 0) & (labels < len(classes))
            truth = np.where(in_range, lookup[np.clip(labels, 0, len(classes))], -1)
        else:
            truth = np.where((labels >= 0) & (labels < out), labels, -1).astype(np.int64)
        return truth, int((truth < 0).sum())


def promotion_from_manifest(manifest: dict[str, Any]) -> PromotionAccuracy:
    """What the manifest alone says about the champion's accuracy at promotion (no interval)."""
    device = manifest.get("device")
    if manifest.get("refit_of"):
        return PromotionAccuracy(None, None, None, None, device,
                                 "unknown: a refit's manifest metrics are in-sample; open the "
                                 "store for its parent's holdout result")
    accuracy = (manifest.get("metrics") or {}).get("accuracy")
    return PromotionAccuracy(_float(accuracy), None, None, None, device,
                             "manifest metrics (holdout size unknown: no interval)")


def promotion_from_store(store: Store, manifest: dict[str, Any], holdout_rows: int,
                         confidence: float) -> PromotionAccuracy:
    """The champion's (or a refit's parent's) holdout accuracy on its device, with its interval."""
    device = manifest.get("device")
    parent = manifest.get("refit_of")
    accuracy = _float((manifest.get("metrics") or {}).get("accuracy"))
    source = "manifest metrics on the sweep's holdout"
    if parent:
        result = next((r for r in store.get_candidate(str(parent)).devices
                       if r.device == device), None)
        accuracy = _float(result.accuracy) if result else None
        source = f"refit parent {parent}'s holdout result"
    if accuracy is None or holdout_rows <= 0:
        return PromotionAccuracy(accuracy, None, None, None, device, source)
    low, high = wilson_interval(round(accuracy * holdout_rows), holdout_rows, confidence)
    return PromotionAccuracy(accuracy, holdout_rows, low, high, device, source)


def _load(channels_dir: Path, channel: str,
          trusted_keys: dict[str, PublicKey] | None) -> LoadedModel:
    """The verified version ``channels_dir/channel`` points at (NoModelError if none)."""
    version = resolve_channel(channels_dir, channel)
    if version is None:
        raise NoModelError(f"channel {channel!r} has no model under {channels_dir}; promote a "
                           f"candidate to it first (`shadow promote ID --channel {channel}`)")
    return load_version(version, channel=channel, trusted_keys=trusted_keys)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
