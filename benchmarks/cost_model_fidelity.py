"""How well does the per-node cost model predict real latency?

1. Generate random MLP and CNN graphs (ONNX, batch 1), measure their ONNX
   Runtime latency on this host (1 thread, warm-up, rounds of >= 20 runs,
   p50; the minimum p50 over interleaved rounds, because other processes
   share the cores and only ever add time).
2. Fit the ``host-cpu`` profile's efficiency terms (fp32 MAC/s, bandwidths,
   per-op and per-inference cost, per-op-class efficiency) by least squares
   on log(predicted / measured), then report leave-one-out MAPE, the share
   within +/-10 % (nn-Meter's metric) and Spearman rank correlation.
3. Estimate ResNet-50 and MobileNet-v2 (plain torch definitions, no weights
   needed) on the SM8550 profile and compare with the Qualcomm AI Hub
   latencies cited in that profile.

Usage: python benchmarks/cost_model_fidelity.py [--quick]
Writes benchmarks/results/cost_model_fidelity.json; last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shadow.devices.catalog import builtin_profile  # noqa: E402
from shadow.devices.edge.cost_model import estimate  # noqa: E402
from shadow.devices.edge.graph import GraphStats, analyze  # noqa: E402
from shadow.devices.edge.profile import DeviceProfile  # noqa: E402

RESULTS = Path(__file__).with_name("results")
#: The fitted terms: (where in the profile, initial value). Fitted in log space (all positive).
TERMS = [("compute.fp32_macs_per_s", 20e9), ("memory.dram_bytes_per_s", 10e9),
         ("memory.onchip_bytes_per_s", 30e9), ("dispatch.per_op_s", 2e-6),
         ("dispatch.per_inference_s", 10e-6), ("efficiency.conv", 0.7), ("efficiency.dwconv", 0.2),
         ("efficiency.pool", 0.3), ("efficiency.elementwise", 0.3)]


# ---------------------------------------------------------------- random graphs
def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.normal(size=shape) * 0.1).astype(np.float32), name)


def random_mlp(rng: np.random.Generator, index: int) -> tuple[str, onnx.ModelProto]:
    width_in = int(rng.choice([16, 64, 256, 784, 1024]))
    widths = [int(rng.choice([32, 128, 256, 512, 1024, 2048])) for _ in range(rng.integers(1, 6))]
    nodes, inits, prev, fan_in = [], [], "x", width_in
    for i, w in enumerate([*widths, 10]):
        inits += [_init(rng, f"w{i}", (w, fan_in)), _init(rng, f"b{i}", (w,))]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"], transB=1, name=f"gemm{i}"))
        prev, fan_in = f"g{i}", w
        if i < len(widths):
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=-1, name="softmax"))
    return f"mlp{index}-{width_in}x{'x'.join(map(str, widths))}", _model(nodes, inits, [1, width_in], [1, 10])


def random_cnn(rng: np.random.Generator, index: int) -> tuple[str, onnx.ModelProto]:
    size = int(rng.choice([16, 32, 48, 64]))
    channels = 3
    nodes, inits, prev, desc = [], [], "x", [f"{size}px"]
    for i in range(int(rng.integers(2, 6))):
        depthwise = channels >= 8 and rng.random() < 0.35
        stride = 2 if (size >= 8 and rng.random() < 0.4) else 1
        if depthwise:  # MobileNet block: depthwise 3x3, then pointwise 1x1
            inits.append(_init(rng, f"dw{i}", (channels, 1, 3, 3)))
            nodes += [helper.make_node("Conv", [prev, f"dw{i}"], [f"d{i}"], group=channels, pads=[1] * 4,
                                       strides=[stride] * 2, name=f"dwconv{i}"),
                      helper.make_node("Relu", [f"d{i}"], [f"dr{i}"], name=f"dwrelu{i}")]
            prev, kernel, pads, stride = f"dr{i}", 1, 0, 1
            desc.append(f"dw{channels}")
        else:
            kernel = int(rng.choice([1, 3, 3, 5]))
            pads = kernel // 2
        out = int(rng.choice([8, 16, 32, 64, 96, 128]))
        inits.append(_init(rng, f"k{i}", (out, channels, kernel, kernel)))
        nodes += [helper.make_node("Conv", [prev, f"k{i}"], [f"c{i}"], pads=[pads] * 4, strides=[stride] * 2,
                                   name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, channels, size = f"r{i}", out, (size + 2 * pads - kernel) // stride + 1
        desc.append(f"c{kernel}x{out}s{stride}")
        if size >= 8 and rng.random() < 0.3:
            nodes.append(helper.make_node("MaxPool", [prev], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2],
                                          name=f"pool{i}"))
            prev, size = f"p{i}", size // 2
    inits += [_init(rng, "fw", (10, channels)), _init(rng, "fb", (10,))]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], transB=1, name="fc")]
    in_size = int(desc[0][:-2])
    return f"cnn{index}-{'-'.join(desc)}", _model(nodes, inits, [1, 3, in_size, in_size], [1, 10])


def _model(nodes: list, inits: list, in_shape: list[int], out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    # IR 10: onnx 1.23 writes IR 14 by default, newer than this ONNX Runtime reads.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


# ---------------------------------------------------------------- measuring
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def measure(models: list[onnx.ModelProto], rounds: int, runs: int, warmup: int = 10) -> np.ndarray:
    """p50 ms per model: the minimum over ``rounds`` interleaved rounds of ``runs`` timed calls."""
    sessions = [session(m) for m in models]
    feeds = [{"x": np.random.default_rng(0).normal(size=[d.dim_value for d in m.graph.input[0].type.tensor_type
                                                          .shape.dim]).astype(np.float32)} for m in models]
    best = np.full(len(models), np.inf)
    for _ in range(rounds):
        for i, (s, feed) in enumerate(zip(sessions, feeds)):
            for _ in range(warmup):
                s.run(None, feed)
            times = np.empty(runs)
            for r in range(runs):
                start = time.perf_counter_ns()
                s.run(None, feed)
                times[r] = time.perf_counter_ns() - start
            best[i] = min(best[i], float(np.median(times)) / 1e6)
    return best


# ---------------------------------------------------------------- fitting
def with_terms(profile: DeviceProfile, values: np.ndarray) -> DeviceProfile:
    """``profile`` with the fitted terms replaced."""
    compute, efficiency = dict(profile.compute), dict(profile.efficiency)
    fields = {}
    for (key, _), value in zip(TERMS, values):
        table, name = key.split(".")
        if table == "compute":
            compute[name] = float(value)
        elif table == "efficiency":
            efficiency[name] = float(value)
        else:
            fields[name] = float(value)
    return dataclasses.replace(profile, compute=compute, efficiency=efficiency, **fields)


def fit(profile: DeviceProfile, graphs: list[GraphStats], measured: np.ndarray) -> np.ndarray:
    """Least squares on log(predicted/measured): minimises relative, not absolute, error."""
    def residuals(log_values: np.ndarray) -> np.ndarray:
        p = with_terms(profile, np.exp(log_values))
        return np.log([estimate(g, p).total_ms for g in graphs]) - np.log(measured)

    start = np.log([v for _, v in TERMS])
    result = optimize.least_squares(residuals, start, method="trf", x_scale=1.0, max_nfev=400,
                                    bounds=(start - 6, start + 6))
    return np.exp(result.x)


def leave_one_out(profile: DeviceProfile, graphs: list[GraphStats], measured: np.ndarray) -> np.ndarray:
    predicted = np.empty(len(graphs))
    for i in range(len(graphs)):
        keep = [j for j in range(len(graphs)) if j != i]
        values = fit(profile, [graphs[j] for j in keep], measured[keep])
        predicted[i] = estimate(graphs[i], with_terms(profile, values)).total_ms
    return predicted


# ---------------------------------------------------------------- reference nets on SM8550
def reference_graphs() -> dict[str, GraphStats]:
    """ResNet-50 and MobileNet-v2 exported from plain torch definitions (random weights)."""
    import torch
    from reference_nets import mobilenet_v2, resnet50  # benchmarks/reference_nets.py

    graphs = {}
    for name, build in (("resnet50", resnet50), ("mobilenet_v2", mobilenet_v2)):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The legacy exporter: seconds instead of a minute for ResNet-50; only shapes matter here.
            torch.onnx.export(build().eval(), (torch.zeros(1, 3, 224, 224),), buffer, dynamo=False,
                              input_names=["x"], output_names=["y"], opset_version=17)
        graphs[name] = analyze(onnx.load_model_from_string(buffer.getvalue()))
    return graphs


def compare_sm8550() -> list[dict]:
    profile = builtin_profile("snapdragon-8-gen-2-htp")
    rows = []
    for name, graph in reference_graphs().items():
        for key, published in sorted(profile.published_latency.items()):
            model, numerics = key.split(".")
            if model != name:
                continue
            est = estimate(graph, profile, numerics)
            rows.append({"model": name, "numerics": numerics, "gmacs": round(graph.total_macs / 1e9, 3),
                         "estimate_ms": round(est.total_ms, 3), "published_ms": published,
                         "ratio": round(est.total_ms / published, 3), "breakdown": est.as_dict()})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="32 graphs, 5 interleaved rounds of 25 runs (under a minute)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_graphs, rounds, runs = (32, 5, 25) if args.quick else (60, 7, 40)
    rng = np.random.default_rng(args.seed)
    named = [(random_mlp if i % 2 else random_cnn)(rng, i) for i in range(n_graphs)]
    started = time.perf_counter()
    measured = measure([m for _, m in named], rounds, runs)
    graphs = [analyze(m) for _, m in named]
    host = builtin_profile("host-cpu")
    predicted = leave_one_out(host, graphs, measured)
    fitted = fit(host, graphs, measured)
    errors = np.abs(predicted - measured) / measured
    summary = {
        "benchmark": "cost_model_fidelity", "quick": args.quick, "graphs": n_graphs,
        "rounds": rounds, "runs_per_round": runs, "host": platform.processor() or platform.machine(),
        "mape": round(float(errors.mean()), 4), "within_10pct": round(float((errors <= 0.10).mean()), 4),
        "spearman": round(float(stats.spearmanr(predicted, measured).statistic), 4),
        "measured_ms_range": [round(float(measured.min()), 4), round(float(measured.max()), 4)],
        "fitted_host_cpu": {k: float(f"{v:.4g}") for (k, _), v in zip(TERMS, fitted)},
        "sm8550_vs_ai_hub": compare_sm8550(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    detail = [{"graph": n, "gmacs": round(g.total_macs / 1e9, 5), "measured_ms": round(float(m), 4),
               "loo_predicted_ms": round(float(p), 4)}
              for (n, _), g, m, p in zip(named, graphs, measured, predicted)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cost_model_fidelity.json").write_text(json.dumps({**summary, "per_graph": detail}, indent=2) + "\n")
    for row in detail:
        print(f"{row['graph'][:48]:48s} {row['measured_ms']:9.4f} ms  loo {row['loo_predicted_ms']:9.4f} ms")
    for row in summary["sm8550_vs_ai_hub"]:
        print(f"SM8550 {row['model']} {row['numerics']}: estimate {row['estimate_ms']} ms, "
              f"AI Hub {row['published_ms']} ms (x{row['ratio']})")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
