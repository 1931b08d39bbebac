"""What each node of an ONNX graph costs, in device-independent units.

ONNX shape inference (batch fixed to 1: an edge app scores one request at a
time) gives every tensor's shape; from those come each node's multiply-
accumulates, its weight elements and the activation elements it reads and
writes. The cost model (:mod:`shadow.devices.edge.cost_model`) turns these into
time for a given profile and numerics. Deterministic: the same graph always
gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import shape_inference

#: Element-wise work per output element for ops that are more than one arithmetic op.
OPS_PER_ELEMENT = {"Softmax": 5.0, "LogSoftmax": 5.0, "Erf": 4.0, "Exp": 4.0, "Sigmoid": 4.0,
                   "Tanh": 4.0, "Gelu": 6.0, "HardSwish": 2.0, "LayerNormalization": 8.0,
                   "BatchNormalization": 2.0}
#: Ops that only reinterpret memory: no arithmetic, no copy in a good runtime.
LAYOUT_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape",
                        "Constant", "Dropout", "Cast"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                      "ReduceMean", "ReduceMax", "ReduceSum"})
#: Activations both ORT and the HTP compiler fuse into the preceding Conv/Gemm.
FUSABLE = frozenset({"Relu", "Clip", "LeakyRelu"})
FUSE_INTO = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass(frozen=True)
class NodeStats:
    """One node's work. Element counts, not bytes: bytes depend on the numerics."""

    name: str
    op_type: str
    op_class: str
    macs: float
    weight_elements: int
    input_elements: int
    output_elements: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: Folded into its producer (Conv+Relu): costs nothing of its own.
    fused: bool = False


@dataclass(frozen=True)
class GraphStats:
    """Per-node work plus the graph's boundary and weight totals."""

    nodes: tuple[NodeStats, ...]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]
    tensor_elements: dict[str, int]

    @property
    def total_macs(self) -> float:
        return float(sum(n.macs for n in self.nodes))

    @property
    def weight_elements(self) -> int:
        return int(sum(n.weight_elements for n in self.nodes))


def fix_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """A copy of ``model`` with every symbolic input/output dimension set to ``batch``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in (*fixed.graph.input, *fixed.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = batch
    return fixed


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _classify(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> str:
    if node.op_type in ("Gemm", "MatMul"):
        return "gemm"
    if node.op_type in ("Conv", "ConvTranspose"):
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        cin = shapes.get(node.input[0], (0, 0))[1] if len(shapes.get(node.input[0], ())) > 1 else 0
        return "dwconv" if group > 1 and group == cin else "conv"
    if node.op_type in POOL_OPS:
        return "pool"
    if node.op_type in LAYOUT_OPS:
        return "layout"
    return "elementwise"


def _macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], out_elems: int, in_elems: int) -> float:
    op = node.op_type
    if op in ("Gemm", "MatMul"):
        a = shapes.get(node.input[0], ())
        trans_a = next((a_.i for a_ in node.attribute if a_.name == "transA"), 0)
        k = (a[-2] if trans_a and len(a) > 1 else a[-1]) if a else 0
        return float(out_elems * k)
    if op == "Conv":
        w = shapes.get(node.input[1], ())
        return float(out_elems * int(np.prod(w[1:]))) if w else 0.0
    if op == "ConvTranspose":
        w = shapes.get(node.input[1], ())
        return float(in_elems * int(np.prod(w[1:]))) if w else 0.0
    if op in LAYOUT_OPS:
        return 0.0
    if op in POOL_OPS:
        return float(in_elems)  # every input element is read and combined once
    return float(out_elems * OPS_PER_ELEMENT.get(op, 1.0))


def analyze(model: onnx.ModelProto) -> GraphStats:
    """Per-node work of ``model`` at batch 1 (in topological order, as ONNX stores it)."""
    model = fix_batch(model, 1)
    shapes = _shapes(model)
    weights = {init.name for init in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    elements = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes = []
    for index, node in enumerate(model.graph.node):
        acts = [i for i in node.input if i and i not in weights]
        in_elems = sum(elements.get(i, 0) for i in acts)
        out_elems = sum(elements.get(o, 0) for o in node.output)
        src = producer.get(node.input[0]) if node.input else None
        fused = (node.op_type in FUSABLE and src is not None and src.op_type in FUSE_INTO
                 and consumers.get(node.input[0], 0) == 1)
        nodes.append(NodeStats(
            name=node.name or f"{node.op_type}_{index}", op_type=node.op_type,
            op_class=_classify(node, shapes), macs=_macs(node, shapes, out_elems, in_elems),
            weight_elements=sum(elements.get(i, 0) for i in node.input if i in weights),
            input_elements=in_elems, output_elements=out_elems,
            inputs=tuple(acts), outputs=tuple(node.output), fused=fused,
        ))
    inputs = tuple(i.name for i in model.graph.input if i.name not in weights)
    return GraphStats(tuple(nodes), inputs, tuple(o.name for o in model.graph.output), elements)


def peak_activation_elements(stats: GraphStats) -> int:
    """Most activation elements alive at once, walking the nodes in order.

    A tensor lives from its producer (or graph entry) to its last consumer
    (graph outputs to the end). Views (layout ops) are counted as tensors:
    conservative, as a budget check should be.
    """
    last_use: dict[str, int] = {}
    for index, node in enumerate(stats.nodes):
        for name in node.inputs:
            last_use[name] = index
    end = len(stats.nodes)
    for name in stats.graph_outputs:
        last_use[name] = end
    live = {name: stats.tensor_elements.get(name, 0) for name in stats.graph_inputs}
    peak = sum(live.values())
    for index, node in enumerate(stats.nodes):
        for name in node.outputs:
            live[name] = stats.tensor_elements.get(name, 0)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index]:
            del live[name]
    return int(peak)
