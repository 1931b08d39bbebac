"""Scoring a stored model on holdout rows with ONNX Runtime (CPU).

Used by the gate when the champion was scored on another holdout than the
challenger: both must be judged on the same rows. The model's input and
output names come from the candidate's signature (``lineage["model_io"]``,
read by :class:`selection.signature.ModelSignature`); without them, the
sweep's default names if the graph has them, else its first input and output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from selection.artifacts.external_data import check_self_contained
from selection.errors import IntegrityError
from selection.signature import INPUT_NAME, OUTPUT_NAME, ModelSignature, SignatureError


def predict_classes(
    model: bytes,
    features: np.ndarray,
    signature: ModelSignature | Mapping[str, Any] | None,
) -> np.ndarray:
    """The predicted class index (int64) of every row of ``features``.

    ``signature`` is the candidate's :class:`ModelSignature` (or its stored
    dict form; an empty dict or None means none is recorded). Raises
    IntegrityError when the model holds external data, when the signature is
    malformed or names a tensor the graph lacks, or when ONNX Runtime cannot
    load or run the model on these features (e.g. a device-compiled binary,
    or another feature count).
    """
    import onnxruntime as ort  # heavy: only the gate's re-scoring needs it

    signature = _signature(signature)
    check_self_contained(model, "a re-scored model")  # ORT would read the files it names
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the CLI shares the machine with a sweep
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise IntegrityError(
            f"ONNX Runtime (CPU) could not load the model to score the holdout "
            f"({features.shape[0]} rows x {features.shape[1]} features): {exc}"
        ) from None
    input_name = _name(signature.input if signature else None,
                       [i.name for i in session.get_inputs()], INPUT_NAME, "input")
    output_name = _name(signature.output if signature else None,
                        [o.name for o in session.get_outputs()], OUTPUT_NAME, "output")
    try:
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


def _signature(value: ModelSignature | Mapping[str, Any] | None) -> ModelSignature | None:
    if value is None or isinstance(value, ModelSignature):
        return value
    if not value:
        return None
    try:
        return ModelSignature.from_dict(value, where="the candidate's model_io")
    except SignatureError as exc:
        raise IntegrityError(f"{exc}; store the candidate again with a valid signature") from None


def _name(wanted: str | None, names: list[str], default: str, what: str) -> str:
    """The signature's name, else the sweep's default if the graph has it, else the first."""
    if wanted is None:
        return default if default in names else names[0]
    if wanted not in names:
        raise IntegrityError(
            f"the {what} {wanted!r} named by the candidate's signature must exist in the model; "
            f"its {what}s are {names}; re-export the model with that name"
        )
    return wanted
