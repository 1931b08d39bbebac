"""Calibrate a device profile's free terms on measured latencies, and judge how well it orders models.

The cost model (:mod:`shadow.devices.edge.cost_model`) has a few terms no vendor publishes
(effective rates, per-op cost, op-class efficiencies). :func:`fit` sets them by least squares
on log(estimate / measured) (relative error: a 0.2 ms model counts as much as a 20 ms one),
with a weak pull towards the profile's own values so a term the data cannot see stays where
its source put it. :func:`leave_one_group_out` refits without each architecture in turn,
which is how the estimate of an architecture the fit never saw is judged. The metrics are
what a user choosing candidates by estimated latency needs: rank agreement (Spearman,
pairwise order) and closeness (MAPE, share within +/-25 %).

Fitting evaluates the estimate thousands of times, so :class:`_Design` holds every node's
numbers in arrays and computes the same roofline as :func:`~shadow.devices.edge.cost_model.estimate`
(every node on the accelerator; the tests check they agree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from shadow.devices.edge.cost_model import CPU_ACTIVATION_BYTES
from shadow.devices.edge.graph import GraphStats
from shadow.devices.edge.profile import ACTIVATION_BYTES, OP_CLASSES, RATE_KEY, WEIGHT_BYTES, DeviceProfile

#: The terms calibration may set. ``efficiency.conv`` stays 1.0: it is the reference class
#: (the compute rates are dense-convolution rates), otherwise rate and efficiency trade off.
FREE_TERMS = ("compute.int8_macs_per_s", "compute.int16_macs_per_s", "compute.fp16_macs_per_s",
              "memory.dram_bytes_per_s", "memory.onchip_bytes_per_s", "dispatch.per_op_s",
              "dispatch.per_inference_s", "fallback.transfer_bytes_per_s", "fallback.transfer_latency_s",
              "efficiency.gemm", "efficiency.dwconv", "efficiency.attention", "efficiency.pool",
              "efficiency.elementwise")
#: Where every fit starts, and what the prior pulls towards: the SM8550 profile's original
#: assumed figures (per-op 3 us, FastRPC 100 us, ...). A fixed start makes a fit reproducible:
#: some terms are barely seen by the data, so starting elsewhere lands elsewhere.
START = {"compute.int8_macs_per_s": 8e12, "compute.int16_macs_per_s": 4e12, "compute.fp16_macs_per_s": 4e12,
         "memory.dram_bytes_per_s": 67.2e9, "memory.onchip_bytes_per_s": 400e9, "dispatch.per_op_s": 3e-6,
         "dispatch.per_inference_s": 100e-6, "fallback.transfer_bytes_per_s": 10e9,
         "fallback.transfer_latency_s": 50e-6, "efficiency.gemm": 0.5, "efficiency.dwconv": 0.15,
         "efficiency.attention": 1.0, "efficiency.pool": 0.25, "efficiency.elementwise": 0.1}
#: Weight of the pull towards the profile's starting values (per term, in log units).
PRIOR_WEIGHT = 0.01
#: How far (natural log) a term may move from its starting value.
BOUND = 5.0


@dataclass(frozen=True)
class Point:
    """One measured latency: a graph, the numerics it ran in, the milliseconds, and its architecture."""

    stats: GraphStats
    numerics: str
    measured_ms: float
    group: str


def term_value(profile: DeviceProfile, key: str) -> float:
    """The current value of one term ("table.name") of ``profile``."""
    table, name = key.split(".")
    if table == "compute":
        return float(profile.compute.get(name, 0.0))
    if table == "efficiency":
        return profile.efficiency_of(name)
    if table == "fallback":
        return float(profile.fallback.get(name, 0.0))
    return float(getattr(profile, name))


def with_terms(profile: DeviceProfile, values: Mapping[str, float]) -> DeviceProfile:
    """``profile`` with the named terms replaced."""
    tables: dict[str, dict[str, float]] = {"compute": dict(profile.compute), "efficiency": dict(profile.efficiency),
                                           "fallback": dict(profile.fallback)}
    fields: dict[str, Any] = {}
    for key, value in values.items():
        table, name = key.split(".")
        if table in tables:
            tables[table][name] = float(value)
        else:
            fields[name] = float(value)
    fields.update(tables)
    return dataclasses.replace(profile, **fields)


def boundary_crossings(stats: GraphStats) -> tuple[float, int]:
    """Bytes and count of the tensors crossing into and out of the accelerator when every node runs on it."""
    bytes_ = count = 0
    consumed = {t for node in stats.nodes for t in node.inputs}
    for tensor in (*[t for t in stats.graph_inputs if t in consumed], *stats.graph_outputs):
        bytes_ += stats.tensor_elements.get(tensor, 0) * CPU_ACTIVATION_BYTES
        count += 1
    return float(bytes_), count


class _Design:
    """Every accelerator node of every point as arrays, for fast repeated estimates."""

    def __init__(self, profile: DeviceProfile, points: Sequence[Point]) -> None:
        cols: dict[str, list[float]] = {k: [] for k in
                                        ("point", "macs", "rate", "cls", "act", "act_chip", "wgt", "wgt_chip")}
        self.rates = sorted({RATE_KEY[p.numerics] for p in points})
        # Graph inputs/outputs cross from the app to the accelerator and back: bytes and count.
        self.crossing_bytes, self.crossings = np.empty(len(points)), np.empty(len(points))
        for index, point in enumerate(points):
            self.crossing_bytes[index], self.crossings[index] = boundary_crossings(point.stats)
            weight_total = point.stats.weight_elements * WEIGHT_BYTES[point.numerics]
            on_chip = 0 < weight_total <= profile.onchip_bytes // 2
            for node in point.stats.nodes:
                if node.fused:
                    continue
                act = 0 if node.op_class == "layout" else (
                    (node.input_elements + node.output_elements) * ACTIVATION_BYTES[point.numerics])
                for key, value in (("point", index), ("macs", node.macs),
                                   ("rate", self.rates.index(RATE_KEY[point.numerics])),
                                   ("cls", OP_CLASSES.index(node.op_class)), ("act", act),
                                   ("act_chip", act <= profile.onchip_bytes),
                                   ("wgt", node.weight_elements * WEIGHT_BYTES[point.numerics]),
                                   ("wgt_chip", on_chip)):
                    cols[key].append(float(value))
        self.n = len(points)
        self.point = np.asarray(cols["point"], dtype=np.int64)
        self.rate = np.asarray(cols["rate"], dtype=np.int64)
        self.cls = np.asarray(cols["cls"], dtype=np.int64)
        self.macs, self.act, self.wgt = (np.asarray(cols[k]) for k in ("macs", "act", "wgt"))
        self.act_chip, self.wgt_chip = (np.asarray(cols[k], dtype=bool) for k in ("act_chip", "wgt_chip"))

    def seconds(self, profile: DeviceProfile) -> np.ndarray:
        """Estimated seconds per point on ``profile`` (the cost model's roofline, vectorised)."""
        rates = np.array([float(profile.compute.get(k, 0.0)) for k in self.rates])
        eff = np.array([profile.efficiency_of(c) for c in OP_CLASSES])
        rate = rates[self.rate] * eff[self.cls]
        compute = np.divide(self.macs, rate, out=np.zeros_like(self.macs), where=rate > 0)
        act_bw = np.where(self.act_chip, profile.onchip_bytes_per_s, profile.dram_bytes_per_s)
        wgt_bw = np.where(self.wgt_chip, profile.onchip_bytes_per_s, profile.dram_bytes_per_s)
        node = np.maximum(compute, self.act / act_bw + self.wgt / wgt_bw) + profile.per_op_s
        bw, latency = profile.fallback.get("transfer_bytes_per_s", 0.0), profile.fallback.get("transfer_latency_s", 0.0)
        transfer = (self.crossing_bytes / bw + self.crossings * latency) if bw > 0 else np.zeros(self.n)
        return np.bincount(self.point, weights=node, minlength=self.n) + profile.per_inference_s + transfer


def predict_ms(profile: DeviceProfile, points: Sequence[Point]) -> np.ndarray:
    """Estimated milliseconds of every point on ``profile`` (every node on the accelerator)."""
    return _Design(profile, points).seconds(profile) * 1e3


def fit(profile: DeviceProfile, points: Sequence[Point], terms: Sequence[str] = FREE_TERMS) -> dict[str, float]:
    """The values of ``terms`` that best explain ``points`` (relative error), starting from :data:`START`.

    ``profile`` supplies everything else (thresholds such as the on-chip size, the op list).
    """
    from scipy import optimize  # type: ignore[import-untyped]

    rates = {RATE_KEY[p.numerics] for p in points}
    # A rate no point runs in cannot be seen by the data: leave it alone.
    terms = [t for t in terms if not t.startswith("compute.") or t.split(".")[1] in rates]
    profile = with_terms(profile, {t: START[t] for t in terms if t in START})
    design = _Design(profile, points)
    measured = np.log([p.measured_ms / 1e3 for p in points])
    start = np.log([max(term_value(profile, t), 1e-30) for t in terms])
    prior = np.sqrt(PRIOR_WEIGHT * len(points) / max(len(terms), 1))

    def residuals(log_values: np.ndarray) -> np.ndarray:
        trial = with_terms(profile, dict(zip(terms, np.exp(log_values))))
        return np.concatenate([np.log(design.seconds(trial)) - measured, prior * (log_values - start)])

    result = optimize.least_squares(residuals, start, method="trf", bounds=(start - BOUND, start + BOUND),
                                    max_nfev=2000)
    return {t: float(v) for t, v in zip(terms, np.exp(result.x))}


def leave_one_group_out(profile: DeviceProfile, points: Sequence[Point],
                        terms: Sequence[str] = FREE_TERMS) -> np.ndarray:
    """Each point's estimate from a fit that never saw its architecture (``Point.group``)."""
    predicted = np.empty(len(points))
    for group in dict.fromkeys(p.group for p in points):
        inside = [i for i, p in enumerate(points) if p.group == group]
        train = [p for p in points if p.group != group]
        fitted = with_terms(profile, fit(profile, train, terms))
        predicted[inside] = predict_ms(fitted, [points[i] for i in inside])
    return predicted


def agreement(predicted: Sequence[float], measured: Sequence[float], tolerance: float = 0.25) -> dict[str, float]:
    """Spearman, pairwise order accuracy, MAPE and the share within +/-``tolerance`` of measured."""
    from scipy import stats

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    errors = np.abs(p - m) / m
    pairs = [(i, j) for i, j in combinations(range(len(m)), 2) if m[i] != m[j]]
    ordered = [np.sign(p[i] - p[j]) == np.sign(m[i] - m[j]) for i, j in pairs]
    return {
        "n": int(len(m)),
        "spearman": float(stats.spearmanr(p, m).statistic) if len(m) > 2 else float("nan"),
        "pairwise_order": float(np.mean(ordered)) if ordered else float("nan"),
        "mape": float(errors.mean()) if len(m) else float("nan"),
        "within_25pct": float((errors <= tolerance).mean()) if len(m) else float("nan"),
    }
