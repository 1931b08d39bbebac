"""A trained model's weights read back from its exported ONNX graph, for a warm start.

Artifacts are ONNX, never pickles, so a model that is to continue training
(a warm start from the champion) gets its weights from the graph it was
served as: :func:`~shadow.models.export.export_onnx` wraps the module in
:class:`~shadow.models.base.WithProbabilities`, and the exporter keeps each
parameter and buffer as an initializer named ``model.<its state_dict key>``.
A graph that does not carry every tensor under that name with the module's
shape (another exporter, a folded constant, a BatchNorm the exporter fused
into its convolution) is refused with the first missing name, rather than
training a half-loaded model; and the loaded module must reproduce the
graph's outputs on real rows (a family that keeps state outside its
parameters and buffers would load "successfully" and be another model).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from shadow.errors import ExportError

#: The prefix export_onnx's wrapper adds to every tensor name of the wrapped module.
PREFIX = "model."


class WeightsError(ExportError):
    """An ONNX graph whose tensors do not fill a module of the family it names."""


def load_onnx_weights(module: nn.Module, onnx_bytes: bytes,
                      check_rows: np.ndarray | None = None) -> None:
    """Copy the tensors of an exported graph into ``module`` (of the same family and params).

    ``check_rows``: rows the loaded module and the graph must then agree on
    (:func:`~shadow.models.export.verify_onnx`'s tolerance), else WeightsError.
    """
    graph = onnx.load_model_from_string(onnx_bytes).graph
    tensors = {init.name: init for init in graph.initializer}
    state = module.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, current in state.items():
        stored = tensors.get(PREFIX + key)
        if stored is None:
            raise WeightsError(
                f"the graph carries no tensor {PREFIX + key!r} (the module's {key!r}, shape "
                f"{list(current.shape)}): it was not exported by this version's export_onnx "
                "from a module of this family and params, so it cannot be trained further")
        array = numpy_helper.to_array(stored)
        if tuple(array.shape) != tuple(current.shape):
            raise WeightsError(
                f"tensor {PREFIX + key!r} has shape {list(array.shape)} in the graph but "
                f"{list(current.shape)} in the module: the family or its params differ")
        loaded[key] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(
            current.dtype)
    module.load_state_dict(loaded)
    if check_rows is not None and len(check_rows):
        from shadow.models.export import verify_onnx

        try:
            verify_onnx(onnx_bytes, module, check_rows)
        except ExportError as exc:
            raise WeightsError(
                f"the graph's tensors loaded, but the module does not reproduce its outputs "
                f"({exc}): the family keeps state outside its parameters and buffers, so it "
                "cannot be trained further from its exported graph") from None
