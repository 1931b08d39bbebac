"""One ONNX graph for several members: ONNX Runtime's output is the weighted average of theirs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from selection.signature import INPUT_NAME, OUTPUT_NAME
from selection.testing import tiny_classifier
from shadow.errors import ShadowError
from shadow.models.ensemble import EnsembleError, combine, normalize_weights


def run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    return np.asarray(out)


def rows(n: int, n_features: int = 8) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, n_features)).astype(np.float32)


def test_graph_is_the_weighted_average_of_its_members_for_any_batch():
    members = [tiny_classifier(seed, hidden=h) for seed, h in ((1, 16), (2, 4), (3, 32))]
    combined = combine(members, [2.0, 1.0, 1.0])
    model = onnx.load_model_from_string(combined)
    onnx.checker.check_model(model, full_check=True)
    # One shared input with a dynamic batch, one output, every member's names kept apart.
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert {n.name.split("_")[0] for n in model.graph.node if n.name.startswith("m")} >= {"m0", "m1", "m2"}
    assert "Sum" not in {n.op_type for n in model.graph.node}  # binary Adds: no accelerator fallback
    for batch in (1, 5, 64):
        x = rows(batch)
        expected = 0.5 * run(members[0], x) + 0.25 * run(members[1], x) + 0.25 * run(members[2], x)
        got = run(combined, x)
        assert got.shape == (batch, 2)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # still probabilities


def test_uniform_by_default_and_weights_normalized():
    members = [tiny_classifier(7), tiny_classifier(8)]
    x = rows(9)
    np.testing.assert_allclose(run(combine(members), x), (run(members[0], x) + run(members[1], x)) / 2,
                               rtol=1e-5, atol=1e-6)
    assert normalize_weights([3, 1], 2) == [0.75, 0.25]


def _renamed_input(model: bytes, name: str) -> bytes:
    proto = onnx.load_model_from_string(model)
    proto.graph.input[0].name = name
    for node in proto.graph.node:
        node.input[:] = [name if i == INPUT_NAME else i for i in node.input]
    return proto.SerializeToString()


def _with_opset(model: bytes, version: int) -> bytes:
    proto = onnx.load_model_from_string(model)
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("", version))
    return proto.SerializeToString()


@pytest.mark.parametrize("members, words", [
    ([tiny_classifier(1), tiny_classifier(2, n_classes=3)], "same classes"),
    ([tiny_classifier(1), tiny_classifier(2, n_features=5)], "same features"),
    ([tiny_classifier(1), _with_opset(tiny_classifier(2), 18)], "same opsets"),
    ([tiny_classifier(1), _renamed_input(tiny_classifier(2), "x")], "must read 'features'"),
    ([tiny_classifier(1)], "at least 2 members"),
    ([tiny_classifier(1), b"not a model"], "not an ONNX model"),
])
def test_mismatched_members_are_refused_in_one_line(members, words):
    with pytest.raises(EnsembleError) as info:
        combine(members)
    assert isinstance(info.value, ShadowError)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(EnsembleError, match="weight"):
        combine([tiny_classifier(1), tiny_classifier(2)], weights)
