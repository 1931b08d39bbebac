"""Several member models as ONE ONNX graph: the weighted average of their probabilities.

Every member keeps the sweep's graph contract (input ``features`` ``(batch, n)`` float32,
output ``probabilities`` ``(batch, classes)``, :mod:`selection.signature`). The combined
graph reads the one shared input, runs every member's nodes (their names prefixed
``m<i>_`` so they cannot collide), scales each member's probabilities by its weight
(weights normalized to sum 1) and adds them up into ``probabilities``. The batch dimension
stays dynamic, so the result is a candidate like any other: a device quantizes, compiles and
measures it as one model, and its size and estimated latency are those of all its members.

The sum is a chain of binary ``Add`` nodes rather than one variadic ``Sum``: every
accelerator backend supports ``Add`` and ``Mul``, so combining never forces a CPU fallback.
Members whose input, class count or opsets differ are refused (``EnsembleError``): averaging
probabilities over different classes, or over graphs that would need converting, means
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from selection.signature import INPUT_NAME, OUTPUT_NAME
from shadow.errors import ShadowError


class EnsembleError(ShadowError, ValueError):
    """Member models cannot be combined into one graph (different contract, opsets, weights)."""


def normalize_weights(weights: Sequence[float], n_members: int) -> list[float]:
    """``weights`` scaled to sum 1; EnsembleError if they are not ``n_members`` finite values >= 0, not all 0."""
    values = np.asarray(list(weights), dtype=np.float64)
    if values.shape != (n_members,):
        raise EnsembleError(f"an ensemble of {n_members} members needs {n_members} weights; "
                            f"got {len(values)}; give one weight per member")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise EnsembleError(f"ensemble weights must be finite, >= 0 and not all 0; got "
                            f"{values.tolist()}; pass positive weights")
    return [float(v) for v in values / values.sum()]


def _io(model: onnx.ModelProto, index: int) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    """The member's one input and one output, checked against the contract."""
    inputs = [i for i in model.graph.input
              if i.name not in {init.name for init in model.graph.initializer}]
    names = ([i.name for i in inputs], [o.name for o in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise EnsembleError(
            f"ensemble member {index} has inputs {names[0]} and outputs {names[1]}; every member "
            f"must read {INPUT_NAME!r} and write {OUTPUT_NAME!r} only (a model the sweep exported)"
        )
    return inputs[0], model.graph.output[0]


def _dims(info: onnx.ValueInfoProto) -> list[int | str]:
    """A tensor's dims: ints where fixed, the symbol (or '?') where not."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in info.type.tensor_type.shape.dim]


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}


def _check_members(models: list[onnx.ModelProto]) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    """EnsembleError unless every member has the first one's input, class count and opsets."""
    first_in, first_out = _io(models[0], 0)
    for index, model in enumerate(models[1:], start=1):
        inp, out = _io(model, index)
        if (inp.type.tensor_type.elem_type != first_in.type.tensor_type.elem_type
                or _dims(inp)[1:] != _dims(first_in)[1:]):
            raise EnsembleError(
                f"ensemble member {index} reads {INPUT_NAME!r} of shape {_dims(inp)}, member 0 "
                f"of shape {_dims(first_in)}; members must take the same features"
            )
        if _dims(out)[1:] != _dims(first_out)[1:]:
            raise EnsembleError(
                f"ensemble member {index} outputs {_dims(out)[1:]} classes, member 0 "
                f"{_dims(first_out)[1:]}; members must predict the same classes"
            )
        if _opsets(model) != _opsets(models[0]):
            raise EnsembleError(
                f"ensemble member {index} uses opsets {_opsets(model)}, member 0 "
                f"{_opsets(models[0])}; combine models exported with the same opsets"
            )
    return first_in, first_out


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every use of ``old`` (subgraphs included) at ``new``."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_input(sub, old, new)


def combine(members: Sequence[bytes], weights: Sequence[float] | None = None) -> bytes:
    """One serialized ONNX model: the weighted average of ``members``' probabilities.

    ``weights`` default to uniform and are normalized to sum 1. Raises EnsembleError
    when fewer than two members are given or they do not share the contract.
    """
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least 2 members; got {len(members)}")
    normalized = normalize_weights([1.0] * len(members) if weights is None else weights, len(members))
    try:
        models = [onnx.load_model_from_string(m) for m in members]
    except Exception as exc:  # a corrupt artifact: say which kind of thing went wrong
        raise EnsembleError(f"an ensemble member is not an ONNX model ({exc})") from None
    shared_input, first_output = _check_members(models)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    functions: list[onnx.FunctionProto] = []
    weighted: list[str] = []
    for index, (model, weight) in enumerate(zip(models, normalized)):
        prefix = f"m{index}_"
        renamed = compose.add_prefix(model, prefix)
        _rename_input(renamed.graph, prefix + INPUT_NAME, INPUT_NAME)
        nodes.extend(renamed.graph.node)
        initializers.extend(renamed.graph.initializer)
        functions.extend(renamed.functions)
        scale = f"{prefix}weight"
        initializers.append(numpy_helper.from_array(np.asarray([weight], dtype=np.float32), scale))
        weighted.append(f"{prefix}weighted")
        nodes.append(helper.make_node("Mul", [prefix + OUTPUT_NAME, scale], [weighted[-1]],
                                      name=f"{prefix}scale"))
    total = weighted[0]
    for index, term in enumerate(weighted[1:], start=1):
        out = OUTPUT_NAME if index == len(weighted) - 1 else f"ensemble_sum{index}"
        nodes.append(helper.make_node("Add", [total, term], [out], name=f"ensemble_add{index}"))
        total = out
    output = onnx.ValueInfoProto()
    output.CopyFrom(first_output)
    graph = helper.make_graph(nodes, f"ensemble-of-{len(models)}", [shared_input], [output],
                              initializers)
    combined = helper.make_model(graph, opset_imports=list(models[0].opset_import),
                                 functions=functions, producer_name="shadow-sweep ensemble")
    combined.ir_version = max(m.ir_version for m in models)
    combined.doc_string = "weighted average of member probabilities; weights " + ", ".join(
        f"{w:.6g}" for w in normalized)
    onnx.checker.check_model(combined, full_check=True)
    return combined.SerializeToString()


__all__ = ["EnsembleError", "combine", "normalize_weights"]
