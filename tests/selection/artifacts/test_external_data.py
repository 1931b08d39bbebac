"""Models that read other files: the threat is real in ONNX Runtime, and the check finds them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from selection.artifacts import external_data as ed
from selection.artifacts.external_data import (
    ExternalDataError,
    ExternalTensor,
    check_self_contained,
    external_tensors,
)
from selection.errors import IntegrityError
from selection.testing import tiny_classifier
from tests.selection.conftest import fake_onnx
from tests.selection.hostile import (
    deeply_nested_reader,
    file_reading_classifier,
    hidden_external_models,
)

SECRET = b"top secret: the staging database password is hunter2, do not leak.\n"


def test_field_numbers_are_onnx_protos() -> None:
    """The stdlib walk hard-codes onnx.proto's field numbers: they must be the package's."""
    def number(message: type, field: str) -> int:
        return message.DESCRIPTOR.fields_by_name[field].number

    assert number(onnx.ModelProto, "graph") == ed._MODEL_GRAPH
    assert number(onnx.ModelProto, "training_info") == ed._MODEL_TRAINING
    assert number(onnx.ModelProto, "functions") == ed._MODEL_FUNCTIONS
    assert (number(onnx.TrainingInfoProto, "initialization"),
            number(onnx.TrainingInfoProto, "algorithm")) == ed._TRAINING_GRAPHS
    assert number(onnx.GraphProto, "node") == ed._GRAPH_NODE
    assert number(onnx.GraphProto, "initializer") == ed._GRAPH_INIT
    assert number(onnx.GraphProto, "sparse_initializer") == ed._GRAPH_SPARSE_INIT
    assert number(onnx.FunctionProto, "node") == ed._FUNCTION_NODE
    assert number(onnx.FunctionProto, "attribute_proto") == ed._FUNCTION_ATTRIBUTE
    assert number(onnx.NodeProto, "attribute") == ed._NODE_ATTRIBUTE
    assert [number(onnx.AttributeProto, f) for f in
            ("t", "g", "tensors", "graphs", "sparse_tensor", "sparse_tensors")] == [
        ed._ATTR_T, ed._ATTR_G, ed._ATTR_TENSORS, ed._ATTR_GRAPHS, ed._ATTR_SPARSE,
        ed._ATTR_SPARSES]
    assert (number(onnx.SparseTensorProto, "values"),
            number(onnx.SparseTensorProto, "indices")) == (ed._SPARSE_VALUES, ed._SPARSE_INDICES)
    assert (number(onnx.TensorProto, "name"), number(onnx.TensorProto, "external_data"),
            number(onnx.TensorProto, "data_location")) == (
        ed._TENSOR_NAME, ed._TENSOR_EXTERNAL, ed._TENSOR_LOCATION)
    assert onnx.TensorProto.EXTERNAL == ed._EXTERNAL


def test_the_threat_is_real_onnx_runtime_reads_the_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded from bytes, ORT resolves the location against the working directory."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    session = ort.InferenceSession(file_reading_classifier("secret.txt"),
                                   providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"features": np.zeros((1, 8), np.float32)})
    assert out[0].tobytes() == SECRET[:64]


def test_self_contained_models_pass() -> None:
    assert external_tensors(tiny_classifier(1)) == []
    check_self_contained(tiny_classifier(1), "x")


@pytest.mark.parametrize("not_onnx", [fake_onnx("c-1"), b"definitely not a model", b"",
                                      b"PK\x03\x04 a zip", bytes(range(256))])
def test_bytes_no_one_can_parse_have_no_external_data(not_onnx: bytes) -> None:
    """Opaque non-model artifacts are not refused here: ORT cannot load them either."""
    assert external_tensors(not_onnx) == []


def test_nesting_too_deep_to_walk_is_refused_not_passed(tmp_path: Path) -> None:
    """ORT loads 30 nested If levels and reads the file; the walk stops at _MAX_DEPTH: refuse."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    model = deeply_nested_reader("secret.txt")
    (tmp_path / "m.onnx").write_bytes(model)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"features": np.zeros((1, 8), np.float32)})
    assert out[0].tobytes() == SECRET[:64]  # the threat is real at this depth
    with pytest.raises(ExternalDataError) as info:
        check_self_contained(model, "artifact 0123abcd")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"artifact 0123abcd must nest at most {ed._MAX_DEPTH} levels")
    assert "re-export" in message
    with pytest.raises(ExternalDataError):
        external_tensors(model)  # never "none found" for a model it could not walk


def test_an_external_initializer_is_found_with_its_file() -> None:
    found = external_tensors(file_reading_classifier("README.md"))
    assert found == [ExternalTensor("leak", "README.md")]
    with pytest.raises(ExternalDataError) as info:
        check_self_contained(file_reading_classifier("../../etc/passwd"), "artifact 0123abcd")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, IntegrityError)
    assert message.startswith("artifact 0123abcd must be a self-contained ONNX model")
    assert "tensor 'leak' points at '../../etc/passwd'" in message
    assert "external_data=False" in message


@pytest.mark.parametrize("where", sorted(hidden_external_models("README.md")))
def test_external_tensors_hidden_anywhere_are_found(where: str) -> None:
    model = hidden_external_models("README.md")[where]
    onnx.load_from_string(model)  # a real, parseable ModelProto
    assert set(external_tensors(model)) == {ExternalTensor("hidden", "README.md")}


def test_the_walk_agrees_with_onnx_on_the_external_helper(tmp_path: Path) -> None:
    """A model onnx itself saved with external data is found, tensor by tensor."""
    model = onnx.load_from_string(tiny_classifier(5, hidden=64))
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    data = path.read_bytes()
    expected = sorted(t.name for t in onnx.load_model(path, load_external_data=False).graph.initializer
                      if onnx.external_data_helper.uses_external_data(t))
    assert expected and sorted(t.name for t in external_tensors(data)) == expected
    assert {t.location for t in external_tensors(data)} == {"weights.bin"}
    assert os.path.exists(tmp_path / "weights.bin")
