"""What each node of an ONNX graph costs, in device-independent units.

ONNX shape inference (batch fixed to 1: an edge app scores one request at a
time) gives every tensor's shape; from those come each node's multiply-
accumulates, its weight elements and the activation elements it reads and
writes. The cost model (:mod:`shadow.devices.edge.cost_model`) turns these into
time for a given profile and numerics. Deterministic: the same graph always
gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at batch 1 as a compiler sees it: ONNX Runtime's basic optimizations applied.

    Constant folding turns the shape arithmetic exporters emit (Shape -> Gather -> Concat ->
    Reshape, thousands of nodes in a Swin transformer) into constants, so shape inference
    reaches every MatMul and the folded nodes cost nothing; redundant nodes are eliminated.
    The QNN EP compiles the graph after these same passes.
    """
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="shadow-fold-") as tmp:
        out = Path(tmp) / "folded.onnx"
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(fix_batch(model, 1).SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load_model(str(out))


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


def refine(stats: GraphStats) -> GraphStats:
    """What a compiler makes of the graph beyond constant folding: GELU fused, attention classed.

    A MatMul of two activations (attention's Q.K^T and A.V) has no weights to keep
    resident in the tensor unit, so it is its own op class ("attention"). Idempotent:
    cached statistics are refined again on load.
    """
    nodes = tuple(replace(n, op_class="attention") if n.op_type == "MatMul" and n.weight_elements == 0
                  and len(n.inputs) == 2 else n for n in stats.nodes)
    return fuse_gelu(replace(stats, nodes=nodes))


#: Op classes whose work cannot vanish: absent from a compiled graph, they were renamed, not dropped.
WORK_CLASSES = frozenset({"gemm", "conv", "dwconv", "attention"})


def drop_absent(stats: GraphStats, compiled_names: set[str] | frozenset[str]) -> tuple[GraphStats, list[str]]:
    """``stats`` with the nodes a compiler removed (absent from ``compiled_names``) costing nothing.

    The QNN EP reports every node of the graph it compiled; one of ours that is not there
    was folded (a Relu into its quantization range, an Identity, a Dropout). Nodes that
    carry MACs are kept: a compiler renames what it fuses them into but cannot drop the work.
    Returns the new statistics and the names of the nodes it dropped.
    """
    dropped = [n.name for n in stats.nodes if not n.fused and n.name not in compiled_names
               and n.op_class not in WORK_CLASSES]
    gone = set(dropped)
    nodes = tuple(replace(n, fused=True) if n.name in gone else n for n in stats.nodes)
    return replace(stats, nodes=nodes), dropped


def fuse_gelu(stats: GraphStats) -> GraphStats:
    """``stats`` with exporters' exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), run as one op.

    Compilers (the QNN HTP backend among them) run the Div -> Erf -> Add -> Mul (-> Mul) chain
    as one GELU: its Erf keeps a cost and the rest are marked fused. Idempotent.
    """
    producer = {o: i for i, n in enumerate(stats.nodes) for o in n.outputs}
    users: dict[str, list[int]] = {}
    for i, node in enumerate(stats.nodes):
        for name in node.inputs:
            users.setdefault(name, []).append(i)
    nodes = list(stats.nodes)

    def only_user(tensor: str, op: str) -> int | None:
        found = users.get(tensor, [])
        return found[0] if len(found) == 1 and nodes[found[0]].op_type == op else None

    for erf in (n for n in stats.nodes if n.op_type == "Erf" and n.inputs):
        div = producer.get(erf.inputs[0])
        add = only_user(erf.outputs[0], "Add")
        mul = only_user(nodes[add].outputs[0], "Mul") if add is not None else None
        if div is None or add is None or mul is None or nodes[div].op_type != "Div":
            continue
        chain = [div, add, mul]
        half = only_user(nodes[mul].outputs[0], "Mul")
        if half is not None and len(nodes[half].inputs) == 1:  # times the constant 0.5
            chain.append(half)
        for i in chain:
            nodes[i] = replace(nodes[i], fused=True)
    return replace(stats, nodes=tuple(nodes))


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
        # A Constant is data the compiler bakes in; a Relu after its Conv is folded into it.
        fused = node.op_type == "Constant" or (
            node.op_type in FUSABLE and src is not None and src.op_type in FUSE_INTO
            and consumers.get(node.input[0], 0) == 1)
        nodes.append(NodeStats(
            name=node.name or f"{node.op_type}_{index}", op_type=node.op_type,
            op_class=_classify(node, shapes), macs=_macs(node, shapes, out_elems, in_elems),
            weight_elements=sum(elements.get(i, 0) for i in node.input if i in weights),
            input_elements=in_elems, output_elements=out_elems,
            inputs=tuple(acts), outputs=tuple(node.output), fused=fused,
        ))
    inputs = tuple(i.name for i in model.graph.input if i.name not in weights)
    return refine(GraphStats(tuple(nodes), inputs, tuple(o.name for o in model.graph.output), elements))


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
