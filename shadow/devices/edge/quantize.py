"""fp32 ONNX -> the numerics a device runs (QDQ int8/int16 activations, fp16, fp32).

Quantization is static QDQ through ``onnxruntime.quantization`` with the QNN
preset (``get_qnn_qdq_config``: the encodings the HTP accepts), calibrated on
rows of the candidate's own training slice. The result keeps a dynamic batch
so the CPU execution provider can score the whole holdout at once;
:func:`static_batch` makes the batch-1 copy the accelerator compiles (the QNN
EP hands dynamic shapes back to the CPU, see ENVIRONMENT.md).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from selection.signature import INPUT_NAME
from shadow.devices.edge.graph import fix_batch
from shadow.devices.errors import ConversionError

#: Rows per calibration batch: large enough to be quick, small enough for big models.
CALIBRATION_BATCH = 64


class _Rows:
    """A CalibrationDataReader over an array of feature rows (duck-typed to avoid an import at load)."""

    def __init__(self, rows: np.ndarray) -> None:
        x = np.ascontiguousarray(rows, dtype=np.float32)
        self._batches = iter([{INPUT_NAME: x[i:i + CALIBRATION_BATCH]}
                              for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - calibrators that rewind get one pass
        pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice on the root logger; library code must not print it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    # The quantizer rewrites the proto it is given (external data, shapes): hand it a copy.
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def to_numerics(onnx_bytes: bytes, numerics: str, calibration: np.ndarray) -> bytes:
    """The model as the device runs it: QDQ for a8w8/a16w8, fp16 weights+compute, or as is."""
    if numerics == "fp32":
        return onnx_bytes
    model = onnx.load_model_from_string(onnx_bytes)
    if numerics == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # keep_io_types: the app still hands float32 features and reads float32 probabilities.
        with _quiet():
            return convert_float_to_float16(model, keep_io_types=True).SerializeToString()
    if numerics not in ("a8w8", "a16w8"):
        raise ConversionError(f"numerics {numerics!r} is not one of a8w8, a16w8, fp16, fp32.")
    if len(calibration) == 0:
        raise ConversionError("no calibration rows: static quantization needs rows of the training slice.")
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    activation = QuantType.QUInt8 if numerics == "a8w8" else QuantType.QUInt16
    with _quiet(), tempfile.TemporaryDirectory(prefix="shadow-q-") as tmp:
        out = Path(tmp) / "model.qdq.onnx"
        try:
            config = get_qnn_qdq_config(_copy(model), _Rows(calibration), activation_type=activation,
                                        weight_type=QuantType.QUInt8, per_channel=True)
            quantize(_copy(model), out, config)
        except Exception as exc:
            raise ConversionError(f"{numerics} quantization failed: {type(exc).__name__}: {exc}") from exc
        return out.read_bytes()


def static_batch(model_bytes: bytes, batch: int = 1) -> bytes:
    """``model_bytes`` with batch fixed and stale intermediate shapes dropped (re-inferred on load)."""
    model = fix_batch(onnx.load_model_from_string(model_bytes), batch)
    del model.graph.value_info[:]
    return model.SerializeToString()
