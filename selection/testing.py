"""Small real ONNX classifiers and candidates for tests, benchmarks and trying the runtime.

Like ``optuna.testing``: public so other test suites can use it, not part of
the serving path. Models are built with ``onnx.helper`` (no torch, no Ray)
and have the sweep's graph contract: input ``features`` ``(batch, n)``
float32, output ``probabilities`` ``(batch, classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selection.artifacts.content import sha256_bytes
from selection.errors import NotFoundError
from selection.records import (
    HOST_DEVICE,
    CandidateRecord,
    DeviceResult,
    HoldoutRecord,
    SliceRecord,
    SweepRecord,
)
from selection.store import Store

FEATURES = ("temp", "dew", "pressure", "wind", "gust", "visibility", "max_t", "min_t")
CLASSES = ("dry", "rain")


def tiny_classifier(seed: int, *, n_features: int = len(FEATURES), hidden: int = 16,
                    n_classes: int = len(CLASSES)) -> bytes:
    """Serialized MLP (MatMul-Relu-MatMul-Softmax) with weights drawn from ``seed``.

    ``hidden`` sets the size: 500_000 gives a ~20 MB model (slow to copy and
    hash, which widens the windows a crash test aims at).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(size=(n_features, hidden)).astype(np.float32),
        "b1": rng.normal(size=(hidden,)).astype(np.float32),
        "w2": (rng.normal(size=(hidden, n_classes)) / np.sqrt(hidden)).astype(np.float32),
        "b2": rng.normal(size=(n_classes,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, f"tiny-{seed}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime this project supports
    return onnx.load_from_string(model.SerializeToString()).SerializeToString()


def add_tiny_candidates(store: Store, candidate_ids: Sequence[str], *, sweep_id: str = "sw-tiny",
                        hidden: int = 16) -> list[CandidateRecord]:
    """Store one sweep (if missing) and a tiny real candidate per id (seeded by its position)."""
    try:
        store.get_sweep(sweep_id)
    except NotFoundError:
        sweep = SweepRecord(sweep_id=sweep_id, name="tiny", dataset="synthetic",
                            dataset_fingerprint="none", holdout=HoldoutRecord(0, 1, "0" * 64),
                            config={}, n_planned=len(candidate_ids))
        store.create_sweep(sweep, [SliceRecord(sweep_id, "all", "all", {}, 1, "0" * 64)])
    model_io = {"input": "features", "output": "probabilities", "features": list(FEATURES),
                "classes": list(CLASSES), "target": "rain"}
    records = []
    for i, cid in enumerate(candidate_ids):
        model = tiny_classifier(1000 + i, hidden=hidden)
        sha = sha256_bytes(model)
        record = CandidateRecord(
            candidate_id=cid, sweep_id=sweep_id, slice_id="all", family="mlp",
            params={"hidden": hidden}, seed=1000 + i, status="ok", onnx_sha256=sha,
            lineage={"model_io": model_io},
            devices=(DeviceResult(HOST_DEVICE, "ok", accuracy=0.7 + i / 100, latency_ms=0.01,
                                  size_bytes=len(model), artifact_sha256=sha),),
        )
        store.add_candidate(record, {sha: model})
        records.append(record)
    return records
