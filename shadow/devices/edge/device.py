"""An edge device described by a profile: quantize, compile, evaluate, estimate.

For one candidate on one profile:

1. convert the fp32 ONNX to the profile's numerics (QDQ a8w8/a16w8, fp16);
2. score the whole holdout with the CPU execution provider running that model
   (``accuracy``, ``agreement_fp32``, per-row predictions);
3. compile a batch-1 copy in the QNN HTP emulator for the profile's SoC, run
   the check set there (``accuracy_emulator``, ``emulator_cpu_agreement``; a batch
   per call where that gives bit-identical outputs to one row per call on 8 sampled rows,
   ``emulator_check_mode``) and
   read which nodes fell back to the CPU and which the compiler folded away (those cost
   nothing); where the emulator cannot run, say
   ``emulator = "cpu-reference"`` and place ops from the profile's op list;
4. estimate latency with the cost model, and memory against the budget.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx

from selection.artifacts.content import sha256_bytes
from selection.records import DeviceResult
from shadow.devices import memo
from shadow.devices.base import Device, DeviceRun
from shadow.devices.edge import qnn
from shadow.devices.edge.cost_model import estimate
from shadow.devices.edge.graph import GraphStats, analyze, drop_absent, peak_activation_elements
from shadow.devices.edge.profile import ACTIVATION_BYTES, WEIGHT_BYTES, DeviceProfile
from shadow.devices.edge.quantize import static_batch, to_numerics
from shadow.devices.onnxruntime_session import shared_latency_ms, shared_top1

#: Holdout rows run through the emulator (it runs at host speed, ~1.7 GMAC/s).
CHECK_ROWS = 256


def check_indices(n_rows: int, wanted: int = CHECK_ROWS) -> np.ndarray:
    """Evenly spread holdout rows (the whole holdout when it is small): deterministic."""
    if n_rows <= wanted:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, wanted).round().astype(np.int64))


class EdgeDevice(Device):
    """A device defined by a :class:`DeviceProfile` (picklable: it is only data)."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    name = property(lambda self: self.profile.name)
    kind = property(lambda self: self.profile.kind)
    numerics = property(lambda self: self.profile.numerics)
    description = property(lambda self: self.profile.description)

    def __repr__(self) -> str:
        return f"EdgeDevice({self.profile.name!r}, {self.profile.numerics})"

    def emulated(self) -> tuple[bool, str | None]:
        """Whether this device's numerics run in the HTP emulator here, and why not."""
        if self.profile.qnn is None:
            return False, "profile has no HTP to emulate (CPU-only core): the CPU EP runs its numerics"
        return qnn.emulator_status()

    def run(
        self, onnx_bytes: bytes, features: np.ndarray, labels: np.ndarray,
        calibration: np.ndarray,
    ) -> DeviceRun:
        profile, numerics = self.profile, self.profile.numerics
        started = time.perf_counter()
        # The candidate's other devices need the same graph statistics, the same quantized
        # model (same numerics and calibration) and the same fp32 predictions: made once.
        model_key = memo.digest(onnx_bytes)
        stats = memo.once(("analyze", model_key), lambda: analyze(onnx.load_model_from_string(onnx_bytes)))
        device_bytes = memo.once((("numerics", model_key, numerics, memo.digest(calibration))),
                                 lambda: to_numerics(onnx_bytes, numerics, calibration))
        predictions = shared_top1(device_bytes, features)
        fp32_predictions = shared_top1(onnx_bytes, features)
        checks = check_indices(len(labels))
        extra: dict[str, Any] = {
            "numerics": numerics, "soc": profile.soc, "holdout_rows": int(len(labels)),
            "agreement_fp32": _share(predictions == fp32_predictions),
            "check_rows": int(len(checks)), "macs": stats.total_macs,
        }
        emulated, reason = self.emulated()
        extra_artifacts: dict[str, bytes] = {}
        if emulated and profile.qnn is not None:
            compiled = qnn.compile_model(static_batch(device_bytes), profile.qnn, numerics)
            # The batched copy only pays when more rows than the cross-check are checked.
            batched = static_batch(device_bytes, qnn.CHECK_BATCH) if len(checks) > qnn.CROSS_CHECK_ROWS else b""
            on_device, extra["emulator_check_mode"] = qnn.check_top1(
                compiled, batched, profile.qnn, numerics, features[checks])
            fallback = compiled.cpu_nodes({n.name for n in stats.nodes})
            # What the compiler folded away costs nothing on the device.
            stats, dropped = drop_absent(stats, {name for _, _, name in compiled.placement})
            extra["compiler_dropped_nodes"] = dropped
            extra.update(
                accuracy_emulator=_share(on_device == labels[checks]),
                emulator_cpu_agreement=_share(on_device == predictions[checks]),
                placement_source="qnn-ep", qnn_options=qnn.provider_options(profile.qnn, numerics),
                accelerator_nodes=sum(1 for ep, op, _ in compiled.placement
                                      if ep == qnn.EP_NAME and op not in qnn.QDQ_OPS),
            )
            compiled_sha = sha256_bytes(compiled.context_bytes) if compiled.context_bytes else None
            if compiled_sha:
                extra_artifacts[compiled_sha] = compiled.context_bytes
        else:
            fallback = [(n.op_type, n.name) for n in stats.nodes if not profile.supports(n.op_type)]
            compiled_sha = None
            extra.update(accuracy_emulator=None, emulator_cpu_agreement=None, compiler_dropped_nodes=[],
                         emulator_check_mode=None,
                         placement_source="cpu-only" if profile.kind == "cpu" else "profile-ops",
                         emulator_reason=reason)
        on_cpu = {name for _, name in fallback}
        cost = estimate(stats, profile, numerics, on_cpu)
        extra.update(_memory(stats, profile, numerics))
        extra.update(
            cpu_fallback_ops=sorted({op for op, _ in fallback}), fallback_nodes=sorted(on_cpu),
            has_fallback=bool(fallback), compiled_sha256=compiled_sha,
            compiled_format="qnn-epcontext-onnx" if compiled_sha else None,
            cost_model=cost.as_dict(), cost_bottlenecks=list(cost.bottleneck_nodes),
            device_model_bytes=len(device_bytes),
        )
        p50, p99 = shared_latency_ms(device_bytes, features[-1])
        # What this device added to the candidate (shared work counts where it was first done).
        extra["device_seconds"] = round(time.perf_counter() - started, 4)
        artifact_sha = sha256_bytes(device_bytes)
        result = DeviceResult(
            device=profile.name, status="ok",
            accuracy=_share(predictions == labels),
            latency_ms=cost.total_ms,
            host_latency_p50_ms=p50, host_latency_p99_ms=p99,
            size_bytes=len(extra_artifacts.get(compiled_sha or "", device_bytes)),
            artifact_sha256=artifact_sha,
            emulator="qnn-htp" if emulated else "cpu-reference",
            extra=extra,
        )
        return DeviceRun(result, device_bytes, predictions, extra_artifacts)


def _share(hits: np.ndarray) -> float | None:
    return float(np.mean(hits)) if len(hits) else None


def _memory(stats: GraphStats, profile: DeviceProfile, numerics: str) -> dict[str, Any]:
    """Peak activations + weights against the profile's budget; over budget is not eligible."""
    peak = peak_activation_elements(stats) * ACTIVATION_BYTES[numerics]
    weights = stats.weight_elements * WEIGHT_BYTES[numerics]
    eligible = peak + weights <= profile.budget_bytes
    reason = None if eligible else (
        f"needs {peak + weights:,} bytes (activations {peak:,} + weights {weights:,}) "
        f"but {profile.name}'s memory budget is {profile.budget_bytes:,}"
    )
    return {"peak_activation_bytes": int(peak), "weight_bytes": int(weights),
            "memory_budget_bytes": profile.budget_bytes, "eligible": eligible, "ineligible_reason": reason}
