"""The edge device end to end on real models: quantize, HTP emulator, placement, estimate."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def separable_model(*, with_erf: bool = False, width: int = 8) -> bytes:
    """features[2] -> Gemm -> Relu -> Gemm -> (Erf) -> Softmax; class 1 iff x0 + x1 > 0."""
    w1 = np.array([[1.0, 1.0], [-1.0, -1.0]] * (width // 2), dtype=np.float32)
    w2 = np.zeros((2, width), dtype=np.float32)
    w2[1, 0::2], w2[0, 1::2] = 2.0, 2.0
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(width, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(2, np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["features", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1, name="fc2")]
    last = "logits"
    if with_erf:
        nodes.append(helper.make_node("Erf", ["logits"], ["erf"], name="erf"))
        last = "erf"
    nodes.append(helper.make_node("Softmax", [last], ["probabilities"], axis=-1, name="softmax"))
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def separable_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, (x.sum(axis=1) > 0).astype(np.int64)


# ---------------------------------------------------------------- tests
import json  # noqa: E402

import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402

from selection.artifacts.content import sha256_bytes  # noqa: E402
from shadow.devices import get_device  # noqa: E402
from shadow.devices.edge.profile import BUILTIN_DIR  # noqa: E402

CONTRACT_KEYS = {"numerics", "agreement_fp32", "emulator_cpu_agreement", "check_rows", "accuracy_emulator",
                 "cpu_fallback_ops", "has_fallback", "peak_activation_bytes", "memory_budget_bytes",
                 "eligible", "ineligible_reason", "compiled_sha256", "cost_model"}
X, Y = separable_rows(400)
CALIBRATION, _ = separable_rows(300, seed=1)


def _run(name: str, model: bytes | None = None):
    return get_device(name).run(model or separable_model(), X, Y, CALIBRATION)


def test_htp_emulator_runs_quantized_model_and_compiles_a_context_binary():
    run = _run("snapdragon-8-gen-2-htp")
    result, extra = run.result, run.result.extra
    assert CONTRACT_KEYS <= set(extra)
    json.dumps(extra)  # stored as JSON
    assert result.status == "ok" and result.emulator == "qnn-htp" and extra["numerics"] == "a8w8"
    assert result.accuracy > 0.95 and extra["agreement_fp32"] > 0.95
    assert extra["check_rows"] == 256 and extra["accuracy_emulator"] > 0.9
    assert extra["emulator_cpu_agreement"] >= 0.97  # same QDQ model: within an LSB or two
    assert not extra["has_fallback"] and extra["cpu_fallback_ops"] == [] and extra["eligible"]
    assert run.predictions.shape == (400,) and run.predictions.dtype == np.int64
    assert np.isclose((run.predictions == Y).mean(), result.accuracy)
    # The artifact is the QDQ model (CPU-runnable); the compiled EPContext model is an extra artifact.
    assert sha256_bytes(run.artifact) == result.artifact_sha256
    ops = {n.op_type for n in onnx.load_model_from_string(run.artifact).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    context = run.extra_artifacts[extra["compiled_sha256"]]
    assert any(n.op_type == "EPContext" for n in onnx.load_model_from_string(context).graph.node)
    assert result.size_bytes == len(context)
    cost = extra["cost_model"]
    assert result.latency_ms == pytest.approx(cost["total_ms"]) and cost["compute_ms"] >= 0
    assert result.host_latency_p50_ms > 0 and result.host_latency_p99_ms >= result.host_latency_p50_ms
    assert _run("snapdragon-8-gen-2-htp").result.latency_ms == result.latency_ms  # deterministic


def test_unsupported_op_falls_back_and_is_flagged():
    run = _run("snapdragon-888-htp", separable_model(with_erf=True))
    extra = run.result.extra
    assert run.result.emulator == "qnn-htp" and extra["placement_source"] == "qnn-ep"
    assert extra["has_fallback"] and extra["cpu_fallback_ops"] == ["Erf"]
    assert extra["cost_model"]["fallback_ms"] > 0 and extra["cost_model"]["transfer_ms"] > 0
    plain = _run("snapdragon-888-htp").result
    assert run.result.latency_ms > plain.latency_ms


def test_without_the_emulator_the_row_says_cpu_reference(monkeypatch):
    monkeypatch.setenv("SHADOW_EMULATOR", "off")
    run = _run("snapdragon-8-gen-2-htp", separable_model(with_erf=True))
    extra = run.result.extra
    assert run.result.emulator == "cpu-reference" and "SHADOW_EMULATOR" in extra["emulator_reason"]
    assert extra["accuracy_emulator"] is None and extra["compiled_sha256"] is None and not run.extra_artifacts
    assert extra["placement_source"] == "profile-ops" and extra["cpu_fallback_ops"] == ["Erf"]
    assert run.result.accuracy > 0.95


def test_cpu_only_profile_has_no_fallback_and_no_emulator():
    run = _run("cortex-a55", separable_model(with_erf=True))
    assert run.result.emulator == "cpu-reference" and not run.result.extra["has_fallback"]
    assert run.result.extra["cost_model"]["transfer_ms"] == 0


@pytest.mark.parametrize("numerics", ["a16w8", "fp16"])
def test_other_numerics_from_a_user_profile(tmp_path, monkeypatch, numerics):
    text = (BUILTIN_DIR / "snapdragon-8-gen-2-htp.toml").read_text()
    text = text.replace('name = "snapdragon-8-gen-2-htp"', f'name = "sm8550-{numerics}"')
    (tmp_path / "p.toml").write_text(text.replace('numerics = "a8w8"', f'numerics = "{numerics}"'))
    monkeypatch.setenv("SHADOW_DEVICES", str(tmp_path))
    run = _run(f"sm8550-{numerics}")
    extra = run.result.extra
    assert run.result.emulator == "qnn-htp" and extra["numerics"] == numerics
    assert extra["emulator_cpu_agreement"] >= 0.97 and run.result.accuracy > 0.95
    session = ort.InferenceSession(run.artifact, providers=["CPUExecutionProvider"])
    assert session.run(None, {"features": X[:3]})[0].shape == (3, 2)


def test_over_budget_is_not_eligible(tmp_path, monkeypatch):
    text = (BUILTIN_DIR / "cortex-a55.toml").read_text().replace('name = "cortex-a55"', 'name = "tiny-mcu"')
    (tmp_path / "tiny.toml").write_text(text.replace("budget_bytes = 67108864", "budget_bytes = 16"))
    monkeypatch.setenv("SHADOW_DEVICES", str(tmp_path))
    extra = _run("tiny-mcu").result.extra
    assert extra["eligible"] is False and "memory budget is 16" in extra["ineligible_reason"]


def test_devices_are_picklable():
    import pickle

    device = pickle.loads(pickle.dumps(get_device("snapdragon-8-gen-2-htp")))
    assert device.name == "snapdragon-8-gen-2-htp"


def test_nodes_the_compiler_folds_away_cost_nothing():
    """An Identity before the Softmax: the compiled graph has no such node, so the estimate drops it."""
    model = onnx.load_model_from_string(separable_model())
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    softmax.input[0] = "same"
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node("Identity", ["logits"], ["same"], name="idn"))
    with_identity = _run("snapdragon-8-gen-2-htp", model.SerializeToString()).result.extra
    plain = _run("snapdragon-8-gen-2-htp").result.extra
    assert with_identity["compiler_dropped_nodes"] == ["idn"] and plain["compiler_dropped_nodes"] == []
    assert with_identity["cost_model"]["total_ms"] == pytest.approx(plain["cost_model"]["total_ms"])


def test_leaderboard_cells_say_numerics_agreement_and_placement():
    from selection.leaderboard.frame import _device_columns

    run = _run("snapdragon-888-htp", separable_model(with_erf=True))
    cells = _device_columns(run.result.extra)
    assert cells["numerics"] == "a8w8" and cells["placement"] == "npu+cpu: Erf"
    assert cells["emulator_agreement"] == run.result.extra["emulator_cpu_agreement"]
    assert _device_columns(_run("snapdragon-8-gen-2-htp").result.extra)["placement"] == "npu"
    assert _device_columns(_run("cortex-a55").result.extra)["placement"] == "cpu"
    assert _device_columns({"numerics": "fp32"}) == {"numerics": "fp32", "placement": None,
                                                     "emulator_agreement": None}


def test_work_shared_by_a_candidates_devices_is_done_once_and_changes_nothing():
    from shadow.devices import memo

    memo.clear()
    host = _run("host-cpu")
    before = dict(memo.stats)
    first = _run("snapdragon-8-gen-2-htp")
    # fp32 predictions (and their session) came from the host's run.
    assert memo.stats["hits"] > before["hits"]
    before = dict(memo.stats)
    second = _run("snapdragon-8-gen-3-htp")
    # Same numerics, same calibration: the quantized model, its predictions and the graph are reused.
    assert memo.stats["hits"] - before["hits"] >= 4
    assert second.artifact == first.artifact and second.result.accuracy == first.result.accuracy
    # Same converted model on the same host: timed once, not once per profile.
    assert second.result.host_latency_p50_ms == first.result.host_latency_p50_ms
    memo.clear()
    fresh = _run("snapdragon-8-gen-3-htp")
    assert fresh.artifact == second.artifact and np.array_equal(fresh.predictions, second.predictions)
    assert fresh.result.extra["agreement_fp32"] == second.result.extra["agreement_fp32"]
    assert np.array_equal(host.predictions, _run("host-cpu").predictions)
    assert fresh.result.extra["device_seconds"] > 0
