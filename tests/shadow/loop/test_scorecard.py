"""The champion's scorecard on a real promoted ONNX model: batch and window accuracy, intervals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from selection import Home, Store, promote
from selection.errors import ConfigError
from selection.records import HoldoutRecord, SliceRecord, SweepRecord
from selection.runtime import NoModelError
from selection.testing import CLASSES, FEATURES, add_tiny_candidates, tiny_classifier
from shadow.loop.scorecard import ChampionScorer, wilson_interval


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A real home whose production channel runs tiny candidate c-a (holdout rows 900..999)."""
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    with Store.open(Home.resolve(tmp_path / "home")) as opened:
        sweep = SweepRecord(sweep_id="sw-tiny", name="tiny", dataset="synthetic",
                            dataset_fingerprint="none",
                            holdout=HoldoutRecord(900, 1000, "0" * 64), config={}, n_planned=2)
        opened.create_sweep(sweep, [SliceRecord("sw-tiny", "all", "all", {}, 1, "0" * 64)])
        add_tiny_candidates(opened, ["c-a", "c-b"])  # c-a: host accuracy 0.70 at promotion
        promote(opened, "c-a")
        yield opened


def _predict(rows: np.ndarray) -> np.ndarray:
    """c-a's predictions by a session of our own: the truth the labels are built from."""
    session = ort.InferenceSession(tiny_classifier(1000), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"features": rows})[0]).argmax(axis=1)


def _batch(n: int, right: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows (model column order) whose labels the champion gets exactly ``right`` of."""
    rows = np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)
    labels = _predict(rows).astype(np.int64)
    labels[right:] = 1 - labels[right:]  # two classes: flipping makes the row wrong
    return rows, labels


def test_wilson_matches_published_values() -> None:
    # 8/10 at 95%: (0.4902, 0.9433); 0/10 and 10/10 still have width (Wald's would be 0).
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    with pytest.raises(ConfigError, match="n > 0"):
        wilson_interval(0, 0)


def test_batches_window_and_promotion_match_hand_computation(store: Store) -> None:
    scorer = ChampionScorer.from_store(store, window=2)
    rows, labels = _batch(10, 8, seed=1)
    # Columns reversed and classes listed the other way round: both are mapped by name.
    reordered = rows[:, ::-1]
    flipped = 1 - labels
    first = scorer.score(reordered, flipped, columns=FEATURES[::-1], classes=CLASSES[::-1],
                         first_row=1000, batch_id="b1")
    assert (first.rows, first.correct, first.accuracy) == (10, 8, 0.8)
    assert (first.ci_low, first.ci_high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert first.errors.tolist() == [0] * 8 + [1] * 2
    scorer.score(*_batch(10, 10, seed=2), columns=FEATURES, first_row=1010)
    scorer.score(*_batch(20, 5, seed=3), columns=FEATURES, first_row=1020)

    card = scorer.scorecard()
    assert [b.accuracy for b in card.batches] == [0.8, 1.0, 0.25]
    # The window pools the last 2 batches' rows: (10 + 5) / (10 + 20) = 0.5.
    assert (card.window_rows, card.window_accuracy) == (30, 0.5)
    # Wilson 15/30: centre 0.5, half-width 1.96 * sqrt(0.25/30 + 1.96^2/3600) / (1 + 1.96^2/30).
    assert (card.window_ci_low, card.window_ci_high) == pytest.approx((0.3315, 0.6685), abs=1e-4)
    # At promotion: 0.70 on the 100-row holdout -> Wilson 70/100.
    promoted = card.promotion
    assert (promoted.accuracy, promoted.rows, promoted.device) == (0.7, 100, "host-cpu")
    assert (promoted.ci_low, promoted.ci_high) == pytest.approx((0.6042, 0.7811), abs=1e-4)
    assert (card.rows, card.seen_until, card.candidate_id) == (40, 1000, "c-a")
    assert card.sha256 == store.get_candidate("c-a").onnx_sha256
    assert card.version == store.home.channel_dir("production").resolve().name
    again = json.loads(json.dumps(card.to_dict()))
    assert again["window_accuracy"] == 0.5 and len(again["batches"]) == 3
    assert "errors" not in again["batches"][0]


def test_without_the_store_promotion_has_no_interval(store: Store) -> None:
    scorer = ChampionScorer.open(store.home.channels_dir)
    scorer.score(*_batch(4, 3, seed=4), columns=FEATURES, first_row=5)  # no stop known: trusted
    card = scorer.scorecard()
    assert card.promotion.accuracy == 0.7 and card.promotion.rows is None
    assert card.promotion.ci_low is None and card.seen_until is None
    assert card.window_accuracy == 0.75


def test_unseen_labels_count_as_wrong(store: Store) -> None:
    scorer = ChampionScorer.from_store(store)
    rows, labels = _batch(6, 6, seed=5)
    classes = ("dry", "rain", "snow")
    labels[0] = 2  # a class the model has no output for
    result = scorer.score(rows, labels, columns=FEATURES, classes=classes)
    assert (result.correct, result.unseen_label_rows) == (5, 1)


def test_wrong_columns_are_one_line_config_errors(store: Store) -> None:
    scorer = ChampionScorer.from_store(store)
    rows, labels = _batch(5, 5, seed=6)
    columns = (*FEATURES[:-1], "humidity")
    with pytest.raises(ConfigError) as caught:
        scorer.score(rows, labels, columns=columns)
    message = str(caught.value)
    assert "\n" not in message
    assert "missing ['min_t'], unknown ['humidity']" in message
    with pytest.raises(ConfigError, match="never saw"):
        scorer.score(rows, labels, columns=FEATURES, first_row=999)
    bad = rows.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="row 2, dew is nan"):
        scorer.score(bad, labels, columns=FEATURES)
    with pytest.raises(ConfigError, match="5 integer class indices"):
        scorer.score(rows, labels[:4], columns=FEATURES)
    assert scorer.scorecard().batches == ()  # refused batches leave nothing behind


def test_window_must_be_positive_and_channel_must_exist(store: Store) -> None:
    with pytest.raises(ConfigError, match="window must be an integer >= 1"):
        ChampionScorer.from_store(store, window=0)
    with pytest.raises(NoModelError, match="canary"):
        ChampionScorer.open(store.home.channels_dir, "canary")
