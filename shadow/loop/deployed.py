"""Scoring ONNX models on rows they never saw, the way an edge app runs them (backtest, record).

Predictions are compared as class *labels* (text), not indices: each sweep numbers the classes
it saw in its visible rows, and a model trained on an early past must still be judged correctly
on a later future.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DeployedModel:
    """What ``channels/<channel>/`` held when it was read: model bytes and its manifest."""

    model: bytes
    manifest: dict[str, Any]

    @property
    def candidate_id(self) -> str:
        return str(self.manifest["candidate_id"])


def read_channel(home: Path, channel: str) -> DeployedModel:
    """The channel's model file and manifest, read through the link once (one version, never a mix)."""
    version = (home / "channels" / channel).resolve()
    return DeployedModel(
        model=(version / "model.onnx").read_bytes(),
        manifest=json.loads((version / "manifest.json").read_text(encoding="utf-8")),
    )


def predict_labels(model: bytes, model_io: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """The predicted class label (text) of every row, with ONNX Runtime on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The sweep's Ray workers own the cores; scoring a period needs one thread.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    input_name = model_io.get("input") or session.get_inputs()[0].name
    scores = session.run(None, {input_name: np.ascontiguousarray(features, dtype=np.float32)})[0]
    classes = np.asarray(model_io["classes"], dtype=object)
    return np.asarray(classes[np.asarray(scores).argmax(axis=1)])


def accuracy(predicted: np.ndarray, truth: Sequence[str] | np.ndarray) -> float:
    """Share of rows whose predicted label equals the true one."""
    return float(np.mean(np.asarray(predicted, dtype=object) == np.asarray(truth, dtype=object)))
