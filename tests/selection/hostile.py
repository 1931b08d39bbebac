"""Hostile inputs built for real: ONNX models whose tensors read other files, and stores
whose channel files were tampered with. Shared by the artifacts, channels and runtime tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from selection import Store
from selection.artifacts.content import sha256_bytes
from selection.records import HOST_DEVICE, CandidateRecord, DeviceResult
from selection.testing import CLASSES, FEATURES, tiny_classifier

SIGNATURE = {"input": "features", "output": "probabilities", "features": list(FEATURES),
             "classes": list(CLASSES), "target": "rain"}


def _external(tensor: TensorProto, location: str, length: int | None = None) -> TensorProto:
    """Point ``tensor``'s data at ``location`` the way onnx's external-data helper does."""
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0,
                                                length=length)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def file_reading_classifier(location: str, *, n_values: int = 16) -> bytes:
    """A model ONNX Runtime loads and runs, whose output *is* the file at ``location``.

    ``probabilities = features @ 0 + leak`` with ``leak`` (``n_values``
    float32) stored "externally" in ``location``: ONNX Runtime, given these
    bytes, reads the first ``4 * n_values`` bytes of that file (relative to its
    working directory) and answers them. (Tensors of 8 values or fewer are read
    earlier by ORT's constant sharing, which fails without a model path; 16 get
    through with default options, as they would for a real attacker.)
    """
    leak = _external(numpy_helper.from_array(np.zeros((n_values,), np.float32), "leak"),
                     location, length=4 * n_values)
    zeros = numpy_helper.from_array(np.zeros((len(FEATURES), n_values), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["h"]),
         helper.make_node("Add", ["h", "leak"], ["probabilities"])],
        "leak",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_values])],
        [zeros, leak],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def deeply_nested_reader(location: str, *, levels: int = 30) -> bytes:
    """:func:`file_reading_classifier` plus ``levels`` nested ``If`` subgraphs ahead of its tensors.

    ONNX Runtime loads and runs it (the nested ``If`` chain is dead code) and
    reads ``location`` for the external ``leak`` initializer; a walk that gives
    up on deep nesting must refuse it, not report "no external tensors".
    """
    def out(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])

    leaf = [helper.make_node("Constant", [], ["y0"],
                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))]
    inner = helper.make_graph(leaf, "b0", [], [out("y0")])
    for i in range(1, levels + 1):
        inner = helper.make_graph(
            [helper.make_node("Constant", [], [f"c{i}"],
                              value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
             helper.make_node("If", [f"c{i}"], [f"y{i}"], then_branch=inner,
                              else_branch=helper.make_graph(leaf, f"e{i}", [], [out("y0")]))],
            f"b{i}", [], [out(f"y{i}")])
    model = onnx.load_from_string(file_reading_classifier(location))
    model.graph.node.extend(inner.node)  # nodes serialize before the initializers
    return model.SerializeToString()


def hidden_external_models(location: str) -> dict[str, bytes]:
    """Models hiding an external tensor in each place a tensor can sit (not all load in ORT)."""
    outside = numpy_helper.from_array(np.zeros(2, np.float32), "hidden")
    _external(outside, location)
    base = onnx.load_from_string(tiny_classifier(3))
    models: dict[str, bytes] = {}

    m = onnx.ModelProto()
    m.CopyFrom(base)
    m.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=outside))
    models["constant attribute"] = m.SerializeToString()

    branch = helper.make_graph([helper.make_node("Identity", ["hidden"], ["y"])], "branch", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                               [outside])
    m = onnx.ModelProto()
    m.CopyFrom(base)
    m.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=branch,
                                         else_branch=branch))
    models["subgraph initializer"] = m.SerializeToString()

    m = onnx.ModelProto()
    m.CopyFrom(base)
    sparse = helper.make_sparse_tensor(
        outside, numpy_helper.from_array(np.array([0, 1], np.int64), "idx"), [4])
    m.graph.sparse_initializer.append(sparse)
    models["sparse initializer"] = m.SerializeToString()

    m = onnx.ModelProto()
    m.CopyFrom(base)
    function = helper.make_function(
        "local", "F", ["a"], ["b"],
        [helper.make_node("Constant", [], ["b"], value=outside)],
        [helper.make_opsetid("", 17)])
    m.functions.append(function)
    models["function body"] = m.SerializeToString()

    m = onnx.ModelProto()
    m.CopyFrom(base)
    graph = helper.make_graph([], "init", [], [], [outside])
    m.training_info.append(onnx.TrainingInfoProto(initialization=graph))
    models["training graph"] = m.SerializeToString()
    return models


def add_candidate(store: Store, candidate_id: str, model: bytes, *,
                  sweep_id: str = "sw-tiny") -> CandidateRecord:
    """Store ``model`` as a candidate of the tiny sweep (``add_tiny_candidates`` made it)."""
    sha = sha256_bytes(model)
    record = CandidateRecord(
        candidate_id=candidate_id, sweep_id=sweep_id, slice_id="all", family="mlp",
        params={}, seed=1, status="ok", onnx_sha256=sha, lineage={"model_io": SIGNATURE},
        devices=(DeviceResult(HOST_DEVICE, "ok", accuracy=0.99, latency_ms=0.01,
                              size_bytes=len(model), artifact_sha256=sha),),
    )
    store.add_candidate(record, {sha: model})
    return record


def forged_version(store: Store, into: Path, model: bytes, *, like: Path,
                   history_id: int | None = None) -> Path:
    """A version folder at ``into`` holding ``model`` and ``like``'s manifest edited to match it.

    What someone who can write files but not the database makes: the model's
    sha256 and the manifest agree, so only a check against the store (or the
    folder's location) can tell. ``history_id`` replaces the manifest's (name
    ``into`` with ``version_name(channel, history_id, sha256)`` to pass as a real version).
    """
    into.mkdir(parents=True)
    (into / "model.onnx").write_bytes(model)
    manifest = json.loads((like / "manifest.json").read_text())
    manifest["sha256"] = sha256_bytes(model)
    manifest["candidate_id"] = "c-forged"
    if history_id is not None:
        manifest["history_id"] = history_id
    (into / "manifest.json").write_text(json.dumps(manifest))
    return into


def copy_version(version: Path, into: Path) -> Path:
    """A byte-for-byte copy of a real version folder somewhere else."""
    shutil.copytree(version, into)
    return into
