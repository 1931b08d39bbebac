"""The graph analysis and the cost model: exact MACs, liveness, a deterministic roofline."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shadow.devices.catalog import builtin_profile
from shadow.devices.edge.cost_model import estimate
from shadow.devices.edge.graph import analyze, peak_activation_elements
from shadow.errors import ConfigError
from tests.shadow.devices.test_edge_device import separable_model


def conv_model() -> onnx.ModelProto:
    """[1,3,8,8] -> Conv 3x3 (16 out) -> Relu -> depthwise 3x3 -> GlobalAveragePool."""
    w = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "w")
    dw = numpy_helper.from_array(np.ones((16, 1, 3, 3), np.float32), "dw")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "dw"], ["d"], pads=[1] * 4, group=16, name="dw"),
             helper.make_node("GlobalAveragePool", ["d"], ["y"], name="gap")]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 1, 1])], [w, dw])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_macs_classes_and_fusion_from_shape_inference():
    stats = analyze(conv_model())
    by_name = {n.name: n for n in stats.nodes}
    assert by_name["conv"].macs == 16 * 8 * 8 * 3 * 3 * 3 and by_name["conv"].op_class == "conv"
    assert by_name["dw"].macs == 16 * 8 * 8 * 9 and by_name["dw"].op_class == "dwconv"
    assert by_name["relu"].fused and by_name["gap"].op_class == "pool"
    assert by_name["conv"].weight_elements == 16 * 27
    # Peak: a 16x8x8 tensor and the next one (the input is freed after conv).
    assert peak_activation_elements(stats) == 1024 + 1024
    gemm = {n.name: n for n in analyze(onnx.load_model_from_string(separable_model())).nodes}
    assert gemm["fc1"].macs == 8 * 2 and gemm["fc2"].macs == 2 * 8


def test_estimate_is_deterministic_and_adds_up():
    stats, profile = analyze(conv_model()), builtin_profile("snapdragon-8-gen-2-htp")
    first, second = estimate(stats, profile), estimate(stats, profile)
    assert first == second
    parts = first.as_dict()
    assert parts["total_ms"] == pytest.approx(sum(v for k, v in parts.items() if k != "total_ms"))
    assert estimate(stats, profile, "fp16").total_ms > first.total_ms  # fp16 is the slower datapath


def test_fallback_costs_cpu_time_and_transfers():
    stats, profile = analyze(conv_model()), builtin_profile("snapdragon-8-gen-2-htp")
    on_npu = estimate(stats, profile)
    split = estimate(stats, profile, on_cpu={"dw"})
    assert split.fallback_ms > 0 and split.transfer_ms > on_npu.transfer_ms
    assert split.total_ms > on_npu.total_ms


def test_faster_profile_gives_lower_latency_and_missing_rate_is_an_error():
    stats, profile = analyze(conv_model()), builtin_profile("cortex-a55")
    faster = dataclasses.replace(profile, compute={k: v * 10 for k, v in profile.compute.items()})
    assert estimate(stats, faster).compute_ms < estimate(stats, profile).compute_ms
    with pytest.raises(ConfigError, match=r"compute\.fp16_macs_per_s: missing"):
        estimate(stats, profile, "fp16")
