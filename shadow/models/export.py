"""torch -> ONNX export, checked against torch before anything trusts the file.

Like optimum's ``validate_model_outputs``: the exported graph is run in ONNX
Runtime on real rows and must match torch within a tolerance, else ExportError.
The file must also be self-contained: a tensor stored in another file would
make every loader read that file, so it is refused here as at promotion and
at load (``selection.artifacts.external_data``).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from selection.artifacts.external_data import ExternalDataError, check_self_contained
from selection.signature import INPUT_NAME, OUTPUT_NAME
from shadow.errors import ExportError
from shadow.models.base import WithProbabilities

#: Probabilities from ORT and torch must agree this closely (fp32 kernels differ slightly).
ATOL = 1e-4
RTOL = 1e-3


def export_onnx(module: nn.Module, sample: np.ndarray) -> bytes:
    """Serialize ``module`` (logits) as a single-file ONNX model outputting probabilities.

    The batch dimension is dynamic so the edge app can score one row or many.
    """
    wrapped = WithProbabilities(module).eval()
    example = torch.from_numpy(np.ascontiguousarray(sample[:2], dtype=np.float32))
    # The exporter warns about internals and logs a torchvision notice on every
    # call; none of it is actionable for a user, and library code must not print.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: "batch"},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program; cannot export this model.")
    proto = program.model_proto
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    check_exportable(data)
    return data


def check_exportable(onnx_bytes: bytes) -> None:
    """Raise ExportError unless ``onnx_bytes`` is one self-contained model file."""
    try:
        check_self_contained(onnx_bytes, "the exported model")
    except ExternalDataError as exc:
        raise ExportError(str(exc)) from None


def verify_onnx(onnx_bytes: bytes, module: nn.Module, rows: np.ndarray) -> float:
    """Run both on ``rows``; return the max abs difference or raise ExportError."""
    check_exportable(onnx_bytes)  # before ORT: building the session would read the files
    x = np.ascontiguousarray(rows, dtype=np.float32)
    with torch.no_grad():
        expected = WithProbabilities(module).eval()(torch.from_numpy(x)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    if got.shape != expected.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from torch's {expected.shape}.")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, atol=ATOL, rtol=RTOL):
        raise ExportError(
            f"ONNX Runtime disagrees with torch by up to {diff:.3g} "
            f"(tolerance atol={ATOL}, rtol={RTOL}); the export is not trustworthy."
        )
    return diff


def opset_of(onnx_bytes: bytes) -> int:
    """The default-domain opset the model was saved with."""
    model = onnx.load_model_from_string(onnx_bytes)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
