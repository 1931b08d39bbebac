"""How well does the per-node cost model predict real latency?

Part 1, this host (the ``host-cpu`` profile):
   random MLP and CNN graphs (ONNX, batch 1), their ONNX Runtime latency measured here (1
   thread, warm-up, the minimum p50 over interleaved rounds: other processes only ever add
   time); the profile's terms fitted by least squares on log(predicted / measured); leave-
   one-out MAPE, share within +/-10 % and Spearman.

Part 2, phone NPUs (what users pick candidates by):
   Qualcomm AI Hub's published latencies (shadow/devices/edge/published/ai_hub_latency.csv,
   from the qai-hub-models wheel) of torchvision's architectures (benchmarks/reference_nets.py)
   in fp16, a8w8 and a16w8 on SM8450, SM8650 and SM8750. Per chip: the fit on all of them
   (which the shipped profile must match) and leave-one-architecture-out Spearman, pairwise
   order accuracy, MAPE and share within +/-25 %. Then SM8550, the chip held out of every
   fit: its shipped profile (terms derived from its neighbours' fits) against AI Hub's
   QCS8550 figures, with the targets Spearman >= 0.95, pairwise >= 0.9, >= 60 % within 25 %.

Usage: python benchmarks/cost_model_fidelity.py [--quick] [--skip-host]
       python benchmarks/cost_model_fidelity.py --extract qai_hub_models-0.65.0-py3-none-any.whl
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
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reference_nets  # noqa: E402  (benchmarks/reference_nets.py)

from shadow.devices.catalog import builtin_profile  # noqa: E402
from shadow.devices.edge import calibrate, published  # noqa: E402
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


# ---------------------------------------------------------------- phone NPUs: AI Hub's figures
#: The chips calibrated on (AI Hub phone), the profile each one's fit sets, and the held-out chip.
FIT_CHIPS = {"SM8450": "snapdragon-8-gen-1-htp", "SM8650": "snapdragon-8-gen-3-htp",
             "SM8750": "snapdragon-8-elite-htp"}
HELD_OUT = ("SM8550", "snapdragon-8-gen-2-htp")
TARGETS = {"spearman": 0.95, "pairwise_order": 0.9, "within_25pct": 0.6}


def _points(rows: list[published.PublishedLatency]) -> list[calibrate.Point]:
    return [calibrate.Point(reference_nets.graph_stats(r.model), r.numerics, r.inference_ms, r.model) for r in rows]


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}


def _per_numerics(points: list[calibrate.Point], predicted: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for numerics in sorted({p.numerics for p in points}):
        idx = [i for i, p in enumerate(points) if p.numerics == numerics]
        out[numerics] = _rounded(calibrate.agreement(predicted[idx], [points[i].measured_ms for i in idx]))
    return out


def _worst(points: list[calibrate.Point], predicted: np.ndarray, n: int = 6) -> list[dict]:
    ratios = sorted(((float(predicted[i] / p.measured_ms), p) for i, p in enumerate(points)),
                    key=lambda rp: -abs(np.log(rp[0])))
    return [{"model": p.group, "numerics": p.numerics, "published_ms": p.measured_ms,
             "estimate_ms": round(r * p.measured_ms, 3), "ratio": round(r, 2)} for r, p in ratios[:n]]


def npu_fidelity() -> dict:
    """Per fitted chip: in-sample fit vs shipped profile, leave-one-architecture-out metrics; then the held-out chip."""
    rows = published.load_published()
    chips: dict[str, dict] = {}
    for chip, name in FIT_CHIPS.items():
        shipped = builtin_profile(name)
        points = _points(published.fit_rows(published.select(rows, chip)))
        fitted = calibrate.fit(shipped, points)
        drift = max(abs(v / calibrate.term_value(shipped, k) - 1) for k, v in fitted.items())
        loao = calibrate.leave_one_group_out(shipped, points)
        chips[chip] = {
            "profile": name, "points": len(points), "architectures": len({p.group for p in points}),
            "leave_one_architecture_out": _rounded(calibrate.agreement(loao, [p.measured_ms for p in points])),
            "loao_per_numerics": _per_numerics(points, loao),
            "in_sample": _rounded(calibrate.agreement(calibrate.predict_ms(shipped, points),
                                                      [p.measured_ms for p in points])),
            # The shipped profile is this fit, rounded to 4 digits: a larger change means the data moved.
            "shipped_terms_max_rel_change": round(float(drift), 4),
            "fitted_terms": {k: float(f"{v:.4g}") for k, v in fitted.items()},
            "worst_loao": _worst(points, loao),
        }
    chip, name = HELD_OUT
    profile = builtin_profile(name)
    points = _points(published.select(rows, chip))  # judged only: never passed to fit()
    predicted = calibrate.predict_ms(profile, points)
    overall = _rounded(calibrate.agreement(predicted, [p.measured_ms for p in points]))
    held = {
        "profile": name, "judged_on": "AI Hub QCS8550 (Proxy), SM8550 silicon, qnn_dlc", "points": len(points),
        "architectures": len({p.group for p in points}), "metrics": overall,
        "per_numerics": _per_numerics(points, predicted), "targets": TARGETS,
        "met": {k: bool(overall[k] >= v) for k, v in TARGETS.items()}, "worst": _worst(points, predicted, 8),
    }
    return {"chips": chips, "held_out": held}


def compare_sm8550_cited() -> list[dict]:
    """The three figures the SM8550 profile cites (Hugging Face model cards, Galaxy S23) against its estimates."""
    profile = builtin_profile(HELD_OUT[1])
    rows = []
    for key, cited in sorted(profile.published_latency.items()):
        model, numerics = key.split(".")
        est = estimate(reference_nets.graph_stats(model), profile, numerics)
        rows.append({"model": model, "numerics": numerics, "estimate_ms": round(est.total_ms, 3),
                     "published_ms": cited, "ratio": round(est.total_ms / cited, 3)})
    return rows


# ---------------------------------------------------------------- regenerating the data file
DEVICES = {"Samsung Galaxy S22 5G": "SM8450", "Samsung Galaxy S24": "SM8650", "Samsung Galaxy S25": "SM8750",
           "QCS8550 (Proxy)": "QCS8550"}
PRECISIONS = {"float": "fp16", "w8a8": "a8w8", "w8a16": "a16w8"}


def extract(wheel: Path, out: Path = published.DATA) -> int:
    """Rewrite the published-latency CSV from a qai-hub-models wheel (its perf.yaml files); returns rows."""
    import csv
    import zipfile

    import yaml

    version = wheel.name.split("-")[1]
    rows = []
    with zipfile.ZipFile(wheel) as archive:
        for model, (builder, side) in reference_nets.ARCHITECTURES.items():
            path = f"qai_hub_models/models/{model}/perf.yaml"
            for precision, per in yaml.safe_load(archive.read(path))["precisions"].items():
                if precision not in PRECISIONS:
                    continue
                ((_, component),) = per["components"].items()
                for device, chip in DEVICES.items():
                    for runtime in ("qnn_dlc", "onnx"):
                        run = component["performance_metrics"].get(device, {}).get(runtime)
                        if not run or run.get("job_status") != "Passed" or "inference_time_milliseconds" not in run:
                            continue
                        layers = run.get("layer_counts", {})
                        rows.append({"model": model, "torchvision": builder, "input_side": side,
                                     "precision": precision, "numerics": PRECISIONS[precision], "device": device,
                                     "chip": chip, "runtime": runtime,
                                     "inference_ms": run["inference_time_milliseconds"],
                                     "npu_layers": layers.get("npu", ""), "total_layers": layers.get("total", ""),
                                     "job_id": run.get("job_id", ""),
                                     "source": f"qai-hub-models {version} wheel: {path}"})
    header = published.DATA.read_text().split("\nmodel,")[0].replace(published.DATA.read_text().split(
        "wheel qai-hub-models ")[1].split(" ")[0], version)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.write_text(header + "\n" + buffer.getvalue())
    return len(rows)


def host_fidelity(quick: bool, seed: int) -> tuple[dict, list[dict]]:
    n_graphs, rounds, runs = (32, 5, 25) if quick else (60, 7, 40)
    rng = np.random.default_rng(seed)
    named = [(random_mlp if i % 2 else random_cnn)(rng, i) for i in range(n_graphs)]
    measured = measure([m for _, m in named], rounds, runs)
    graphs = [analyze(m) for _, m in named]
    host = builtin_profile("host-cpu")
    predicted = leave_one_out(host, graphs, measured)
    fitted = fit(host, graphs, measured)
    errors = np.abs(predicted - measured) / measured
    summary = {
        "graphs": n_graphs, "rounds": rounds, "runs_per_round": runs,
        "host": platform.processor() or platform.machine(),
        "mape": round(float(errors.mean()), 4), "within_10pct": round(float((errors <= 0.10).mean()), 4),
        "spearman": round(float(stats.spearmanr(predicted, measured).statistic), 4),
        "measured_ms_range": [round(float(measured.min()), 4), round(float(measured.max()), 4)],
        "fitted_host_cpu": {k: float(f"{v:.4g}") for (k, _), v in zip(TERMS, fitted)},
    }
    detail = [{"graph": n, "gmacs": round(g.total_macs / 1e9, 5), "measured_ms": round(float(m), 4),
               "loo_predicted_ms": round(float(p), 4)}
              for (n, _), g, m, p in zip(named, graphs, measured, predicted)]
    return summary, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="host part: 32 graphs, 5 interleaved rounds of 25 runs (the NPU part is the same)")
    parser.add_argument("--skip-host", action="store_true", help="only the phone-NPU part")
    parser.add_argument("--extract", type=Path, metavar="WHEEL",
                        help="rewrite the published-latency CSV from a qai-hub-models wheel, then exit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.extract:
        print(json.dumps({"benchmark": "cost_model_fidelity", "extracted_rows": extract(args.extract)}))
        return 0
    started = time.perf_counter()
    npu = npu_fidelity()
    npu_seconds = time.perf_counter() - started
    host, detail = ({}, []) if args.skip_host else host_fidelity(args.quick, args.seed)
    held = npu["held_out"]
    summary = {
        "benchmark": "cost_model_fidelity", "quick": args.quick,
        # Headline: the chip no term was fitted on.
        "heldout_chip": HELD_OUT[0], "heldout_spearman": held["metrics"]["spearman"],
        "heldout_pairwise": held["metrics"]["pairwise_order"], "heldout_mape": held["metrics"]["mape"],
        "heldout_within_25pct": held["metrics"]["within_25pct"], "heldout_targets_met": held["met"],
        "loao": {chip: c["leave_one_architecture_out"] for chip, c in npu["chips"].items()},
        "npu": npu, "sm8550_cited": compare_sm8550_cited(), "npu_seconds": round(npu_seconds, 1),
        "host_cpu": host, "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cost_model_fidelity.json").write_text(json.dumps({**summary, "per_graph": detail}, indent=2) + "\n")
    for chip, c in npu["chips"].items():
        m = c["leave_one_architecture_out"]
        print(f"{chip} ({c['profile']}, {c['points']} figures, {c['architectures']} architectures) leave-one-"
              f"architecture-out: Spearman {m['spearman']}, pairwise {m['pairwise_order']}, MAPE {m['mape']}, "
              f"within 25% {m['within_25pct']}")
    m = held["metrics"]
    print(f"HELD OUT {HELD_OUT[0]} ({held['points']} figures): Spearman {m['spearman']}, pairwise "
          f"{m['pairwise_order']}, MAPE {m['mape']}, within 25% {m['within_25pct']}; targets met: {held['met']}")
    for row in held["worst"]:
        print(f"   worst: {row['model']} {row['numerics']}: estimate {row['estimate_ms']} ms, "
              f"published {row['published_ms']} ms (x{row['ratio']})")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
