"""Scoring a stored model on holdout rows with ONNX Runtime (CPU).

Used by the gate when the champion was scored on another holdout than the
challenger: both must be judged on the same rows. The model's input and
output names come from the candidate's ``lineage["model_io"]`` (the producer
records them); without them the graph's first input and output are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from selection.errors import IntegrityError


def predict_classes(model: bytes, features: np.ndarray, model_io: Mapping[str, Any]) -> np.ndarray:
    """The predicted class index (int64) of every row of ``features``.

    Raises IntegrityError when ONNX Runtime cannot load or run the model on
    these features (e.g. a device-compiled binary, or another feature count).
    """
    import onnxruntime as ort  # heavy: only the gate's re-scoring needs it

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the CLI shares the machine with a sweep
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        input_name = model_io.get("input") if model_io.get("input") in inputs else inputs[0]
        output_name = model_io.get("output") if model_io.get("output") in outputs else outputs[0]
        scores = session.run([output_name], {input_name: np.ascontiguousarray(features, np.float32)})[0]
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise IntegrityError(
            f"ONNX Runtime (CPU) could not score the model on the holdout "
            f"({features.shape[0]} rows x {features.shape[1]} features): {exc}"
        ) from None
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != features.shape[0]:
        raise IntegrityError(
            f"the model's output {output_name!r} must be (rows, classes); got shape {scores.shape}"
        )
    return scores.argmax(axis=1).astype(np.int64)
