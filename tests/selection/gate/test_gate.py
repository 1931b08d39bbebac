"""The champion/challenger gate on real ONNX models, holdout rows and per-row predictions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import binomtest

from selection import (
    HOST_DEVICE,
    CandidateRecord,
    ConfigError,
    DeviceResult,
    HoldoutRecord,
    Store,
    SweepRecord,
    sha256_bytes,
)
from selection.artifacts.arrays import encode_array, encode_holdout
from selection.channels.promotion import current, history, promote
from selection.errors import PromotionError
from selection.gate.decision import GatePolicy, evaluate_gate, force_decision, gate_from_config
from selection.gate.record import GateCheck, GateDecision
from selection.gate.rescore import predict_classes
from selection.gate.stats import mcnemar_exact

MODEL_IO = {"input": "features", "output": "probabilities", "features": ["x0", "x1"]}


def linear_onnx(weights: np.ndarray) -> bytes:
    """A real ONNX classifier: softmax(features @ weights), input/output named as shadow exports."""
    w = numpy_helper.from_array(weights.astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", weights.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


PERFECT = np.array([[-1.0, 1.0], [-1.0, 1.0]])  # predicts x0 + x1 > 0: the true rule
HALF = np.array([[-1.0, 1.0], [0.0, 0.0]])      # looks at x0 only: about 75 % right
NEAR = np.array([[-1.0, 1.0], [-0.98, 0.98]])   # almost the true rule


class Lab:
    """Sweeps with stored holdouts and candidates scored on them, in one store."""

    def __init__(self, store: Store) -> None:
        self.store, self.tick = store, 0

    def sweep(self, sweep_id: str, seed: int, n: int = 400, config: dict | None = None) -> tuple:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 2)).astype(np.float32)
        y = (x.sum(axis=1) > 0).astype(np.int64)
        data = encode_holdout(x, y)
        self.store.artifacts.put(data)
        self.store.create_sweep(SweepRecord(
            sweep_id, sweep_id, "toy", "fp", HoldoutRecord(0, n, "a" * 64, data_sha256=sha256_bytes(data)),
            config or {}, 1), [])
        return x, y

    def candidate(self, cid: str, sweep_id: str, weights: np.ndarray, holdout: tuple,
                  latency: float = 1.0, **extra) -> None:
        x, y = holdout
        model = linear_onnx(weights)
        predictions = predict_classes(model, x, MODEL_IO)
        pred_bytes = encode_array(predictions)
        sha = sha256_bytes(model)
        self.tick += 1
        result = DeviceResult(HOST_DEVICE, "ok", accuracy=float(np.mean(predictions == y)),
                              latency_ms=latency, size_bytes=len(model), artifact_sha256=sha,
                              predictions_sha256=sha256_bytes(pred_bytes), extra=extra)
        self.store.add_candidate(
            CandidateRecord(cid, sweep_id, "s", "linear", {"tick": self.tick}, 0, "ok",
                            onnx_sha256=sha, lineage={"model_io": MODEL_IO}, devices=(result,)),
            {sha: model, sha256_bytes(pred_bytes): pred_bytes})


@pytest.fixture
def lab(store: Store) -> Lab:
    return Lab(store)


def _check(decision: GateDecision, name: str) -> GateCheck:
    check = decision.check(name)
    assert check is not None, f"the gate ran no check {name!r}: {[c.check for c in decision.checks]}"
    return check


def test_no_champion_eligible_challenger_passes(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-half", "sw-1", HALF, h)
    decision = evaluate_gate(store, "c-half")
    assert decision.passed and decision.champion is None
    assert "no champion yet" in _check(decision, "champion").detail


def test_clearly_better_challenger_passes_with_p_value(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-half", "sw-1", HALF, h)
    lab.candidate("c-best", "sw-1", PERFECT, h, latency=1.05)
    promote(store, "c-half")
    decision = evaluate_gate(store, "c-best")
    assert decision.passed, decision.reasons
    test = decision.test
    assert test is not None
    expected = binomtest(test.b_challenger_only, test.b_challenger_only + test.c_champion_only,
                         0.5, alternative="greater").pvalue
    assert test.p_value == pytest.approx(expected) and test.p_value < 1e-6
    assert decision.improvement.absolute > 0.1
    assert decision.champion.rescored is False  # same holdout: stored predictions
    assert decision.guards[0].status == "pass"
    record = promote(store, "c-best", decision=decision)
    stored = GateDecision.from_json(history(store)[0].decision)
    assert stored.test is not None and stored.test.p_value == test.p_value
    assert GateDecision.from_json(record.decision).passed is True


def test_a_decision_does_not_hold_once_the_channel_moved(store: Store, lab: Lab) -> None:
    """The gate judges outside the channel lock: a promotion in between voids its decision."""
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-half", "sw-1", HALF, h)
    lab.candidate("c-best", "sw-1", PERFECT, h)
    lab.candidate("c-other", "sw-1", PERFECT, h, latency=1.01)
    promote(store, "c-half")
    decision = evaluate_gate(store, "c-best")  # judged against c-half
    assert decision.passed and decision.champion.candidate_id == "c-half"
    promote(store, "c-other", reason="someone else's promotion landed first")
    before = history(store)
    with pytest.raises(PromotionError, match="changed since the gate judged"):
        promote(store, "c-best", decision=decision)
    assert history(store) == before  # nothing changed
    assert current(store, "production").candidate_id == "c-other"


def test_small_gain_fails_significance_and_min_improvement(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0, config={"gate": {"min_improvement": 0.05}})
    lab.candidate("c-near", "sw-1", NEAR, h)
    lab.candidate("c-best", "sw-1", PERFECT, h)
    promote(store, "c-near")
    decision = evaluate_gate(store, "c-best")
    assert not decision.passed
    assert not _check(decision, "improvement").passed
    assert not _check(decision, "significance").passed
    assert decision.test.p_value >= 0.05
    assert any("needs > 0 and >= 0.05" in r for r in decision.reasons)


def test_worse_challenger_and_latency_guard(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-best", "sw-1", PERFECT, h, latency=1.0)
    lab.candidate("c-half", "sw-1", HALF, h, latency=2.0)
    promote(store, "c-best")
    decision = evaluate_gate(store, "c-half")
    assert not decision.passed
    assert not _check(decision, "improvement").passed
    guard = _check(decision, "guard latency_ms")
    assert not guard.passed and "+100.0 % worse; allowed 10 %" in guard.detail


def test_no_regression_passes_a_tie_and_a_small_loss_but_not_a_real_one(store: Store, lab: Lab) -> None:
    rule = {"gate": {"require": "no-regression", "max_regression": 0.01}}
    h = lab.sweep("sw-1", 0, config=rule)
    lab.candidate("c-best", "sw-1", PERFECT, h)
    lab.candidate("c-near", "sw-1", NEAR, h)
    lab.candidate("c-half", "sw-1", HALF, h)
    promote(store, "c-best")
    near = evaluate_gate(store, "c-near")  # a row or two worse: no evidence of a regression
    assert near.passed, near.reasons
    assert -0.01 <= near.improvement.absolute <= 0
    assert near.test.alternative == "is the champion better?" and near.test.p_value >= 0.05
    assert "not significantly worse" in _check(near, "significance").detail
    half = evaluate_gate(store, "c-half")  # 25 points worse: refused on both counts
    assert not half.passed
    assert not _check(half, "no regression").passed and "needs >= -0.01" in _check(half, "no regression").detail
    assert not _check(half, "significance").passed and half.test.p_value < 1e-6
    # Without a cap only the test decides: 25 points worse on 400 rows is significant.
    uncapped = evaluate_gate(store, "c-half", gate=GatePolicy(require="no-regression"))
    assert _check(uncapped, "no regression").passed and "no cap" in _check(uncapped, "no regression").detail
    assert not uncapped.passed and "significantly worse" in " ".join(uncapped.reasons)
    # The same candidates under the default rule: a tie or a loss is never an improvement.
    assert not evaluate_gate(store, "c-near", gate=GatePolicy()).passed


def test_constraints_are_checked(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-fb", "sw-1", PERFECT, h, has_fallback=True)
    decision = evaluate_gate(store, "c-fb")
    assert not decision.passed
    assert "fall back to the CPU" in decision.reasons[0]


def test_champion_from_another_holdout_is_rescored(store: Store, lab: Lab) -> None:
    old = lab.sweep("sw-old", 1)
    lab.candidate("c-half", "sw-old", HALF, old)
    promote(store, "c-half")
    new = lab.sweep("sw-new", 2)
    lab.candidate("c-best", "sw-new", PERFECT, new)
    decision = evaluate_gate(store, "c-best")
    assert decision.passed, decision.reasons
    assert decision.champion.rescored is True
    assert "re-scored" in decision.champion.scored_by
    x, y = new
    expected = float(np.mean(predict_classes(linear_onnx(HALF), x, MODEL_IO) == y))
    assert decision.improvement.champion_accuracy == pytest.approx(expected)
    assert decision.holdout.sweep_id == "sw-new"


def test_force_is_recorded_and_needs_a_reason(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-best", "sw-1", PERFECT, h)
    lab.candidate("c-half", "sw-1", HALF, h)
    promote(store, "c-best")
    decision = evaluate_gate(store, "c-half")
    with pytest.raises(ConfigError, match="--force needs --reason"):
        force_decision(decision, "  ")
    forced = force_decision(decision, "demo rollback target", "me@host")
    promote(store, "c-half", reason="demo rollback target", decision=forced)
    assert history(store)[0].decision == forced.to_json()  # stored as its JSON
    stored = GateDecision.from_json(history(store)[0].decision)
    assert stored.forced is True and stored.passed is False
    assert stored.override is not None and stored.override.reason == "demo rollback target"
    assert stored.override.who == "me@host" and stored.reasons


def test_gate_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key.*'beta'.*known keys: min_improvement, alpha"):
        gate_from_config({"beta": 1}, "[gate]")
    with pytest.raises(ConfigError, match="alpha must be a number in \\(0, 1\\)"):
        gate_from_config({"alpha": 1.5}, "[gate]")
    with pytest.raises(ConfigError, match="guards.*metric must be one of"):
        gate_from_config({"guards": {"speed": 5}}, "[gate]")
    with pytest.raises(ConfigError, match="require must be one of improvement, no-regression; got 'better'"):
        gate_from_config({"require": "better"}, "[gate]")
    with pytest.raises(ConfigError, match="max_regression must be a number in \\[0, 1\\]"):
        gate_from_config({"max_regression": -0.1}, "[gate]")
    policy = gate_from_config({"alpha": 0.01, "guards": {"size_bytes": 20}}, "[gate]")
    assert policy == GatePolicy(alpha=0.01, guards={"size_bytes": 20})


def test_mcnemar_exact_counts() -> None:
    a = np.array([1, 1, 1, 1, 0, 1], dtype=bool)
    z = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    result = mcnemar_exact(a, z)
    assert (result.b_challenger_only, result.c_champion_only) == (3, 1)
    assert result.p_value == pytest.approx(binomtest(3, 4, 0.5, alternative="greater").pvalue)
    assert mcnemar_exact(a, a).p_value == 1.0
    with pytest.raises(ConfigError, match="same holdout rows"):
        mcnemar_exact(a, z[:3])


def test_onnx_helper_model_is_valid() -> None:
    onnx.checker.check_model(onnx.load_from_string(linear_onnx(PERFECT)))
