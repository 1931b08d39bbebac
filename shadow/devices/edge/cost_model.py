"""Latency of one inference on a device profile: a per-node roofline.

For each node placed on the accelerator: ``max(compute, memory) + dispatch``,
where compute is MACs over the profile's effective rate for the numerics
(scaled by the op class's efficiency) and memory is weight bytes streamed from
DRAM plus activation bytes from on-chip memory when they fit (DRAM when they
do not). A node that falls back to the CPU costs the profile's CPU rates, and
every tensor crossing the accelerator/CPU boundary pays a transfer. The sum
plus a fixed per-inference cost is the estimate. Deterministic by design: an
emulator's wall time tracks the host, not the device (see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from shadow.devices.edge.graph import GraphStats, NodeStats
from shadow.devices.edge.profile import ACTIVATION_BYTES, RATE_KEY, WEIGHT_BYTES, DeviceProfile
from shadow.errors import ConfigError

#: Activations a CPU fallback node reads and writes: fp32 (the CPU EP dequantizes).
CPU_ACTIVATION_BYTES = 4


@dataclass(frozen=True)
class CostBreakdown:
    """Estimated milliseconds, split by where the time goes (sums to ``total_ms``)."""

    compute_ms: float
    memory_ms: float
    dispatch_ms: float
    fallback_ms: float
    transfer_ms: float
    total_ms: float
    bottleneck_nodes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float]:
        """The breakdown as stored in DeviceResult.extra["cost_model"]."""
        return {k: float(getattr(self, k)) for k in
                ("compute_ms", "memory_ms", "dispatch_ms", "fallback_ms", "transfer_ms", "total_ms")}


def node_seconds(node: NodeStats, profile: DeviceProfile, numerics: str,
                 weights_on_chip: bool) -> tuple[float, float, float]:
    """(compute-bound part, memory-bound excess, dispatch) seconds of one accelerator node.

    The roofline is ``max(compute, memory)``; it is returned split as compute
    plus the excess of memory over compute, so a breakdown adds up.
    """
    if node.fused:
        return 0.0, 0.0, 0.0
    rate = profile.macs_per_s(numerics) * profile.efficiency_of(node.op_class)
    compute = node.macs / rate if rate > 0 else 0.0
    act_bytes = (node.input_elements + node.output_elements) * ACTIVATION_BYTES[numerics]
    weight_bytes = node.weight_elements * WEIGHT_BYTES[numerics]
    if node.op_class == "layout":
        act_bytes = 0  # a view: nothing moves
    act_bw = profile.onchip_bytes_per_s if act_bytes <= profile.onchip_bytes else profile.dram_bytes_per_s
    weight_bw = profile.onchip_bytes_per_s if weights_on_chip else profile.dram_bytes_per_s
    memory = act_bytes / act_bw + weight_bytes / weight_bw
    return compute, max(0.0, memory - compute), profile.per_op_s


def fallback_seconds(node: NodeStats, profile: DeviceProfile) -> float:
    """One node on the CPU, fp32: its own roofline plus the CPU's per-op cost."""
    if node.fused:
        return 0.0
    fb = profile.fallback
    compute = node.macs / fb["cpu_macs_per_s"] if fb.get("cpu_macs_per_s") else 0.0
    moved = (node.input_elements + node.output_elements) * CPU_ACTIVATION_BYTES + node.weight_elements * 4
    memory = moved / fb["cpu_bytes_per_s"] if fb.get("cpu_bytes_per_s") else 0.0
    return max(compute, memory) + fb.get("cpu_per_op_s", profile.per_op_s)


def _transfers(stats: GraphStats, on_cpu: Collection[str], profile: DeviceProfile) -> float:
    """Seconds spent moving tensors across the accelerator/CPU boundary.

    Graph inputs and outputs live on the CPU side (the app hands them over),
    so an accelerator node reading a graph input pays one transfer too.
    """
    fb = profile.fallback
    bw, latency = fb.get("transfer_bytes_per_s", 0.0), fb.get("transfer_latency_s", 0.0)
    if bw <= 0:
        return 0.0
    where = {name: True for name in stats.graph_inputs}  # True = on the CPU
    seconds = 0.0
    crossed: set[str] = set()
    for node in stats.nodes:
        here = node.name in on_cpu
        for tensor in node.inputs:
            if tensor in where and where[tensor] != here and tensor not in crossed:
                crossed.add(tensor)
                seconds += stats.tensor_elements.get(tensor, 0) * CPU_ACTIVATION_BYTES / bw + latency
        for tensor in node.outputs:
            where[tensor] = here
    for tensor in stats.graph_outputs:
        if not where.get(tensor, True) and tensor not in crossed:
            seconds += stats.tensor_elements.get(tensor, 0) * CPU_ACTIVATION_BYTES / bw + latency
    return seconds


def estimate(stats: GraphStats, profile: DeviceProfile, numerics: str | None = None,
             on_cpu: Collection[str] = ()) -> CostBreakdown:
    """Estimated latency of one inference (batch 1) of ``stats`` on ``profile``.

    ``on_cpu`` names the nodes that fall back to the CPU. A profile without a
    transfer rate (CPU-only, host) has no boundary and pays no transfers.
    """
    numerics = numerics or profile.numerics
    if profile.macs_per_s(numerics) <= 0:
        raise ConfigError(f"device profile {profile.path}: compute.{RATE_KEY[numerics]}: missing, so it "
                          f"cannot run {numerics}; add the rate or pick another numerics.")
    weight_bytes = stats.weight_elements * WEIGHT_BYTES[numerics]
    # Weights stay resident on chip only when all of them fit beside the activations.
    weights_on_chip = 0 < weight_bytes <= profile.onchip_bytes // 2
    compute = memory = dispatch = fallback = 0.0
    per_node: list[tuple[float, str]] = []
    for node in stats.nodes:
        if node.name in on_cpu:
            seconds = fallback_seconds(node, profile)
            fallback += seconds
        else:
            c, m, d = node_seconds(node, profile, numerics, weights_on_chip)
            compute, memory, dispatch = compute + c, memory + m, dispatch + d
            seconds = c + m + d
        per_node.append((seconds, node.name))
    transfer = _transfers(stats, on_cpu, profile)
    dispatch += profile.per_inference_s
    total = compute + memory + dispatch + fallback + transfer
    top = tuple(name for _, name in sorted(per_node, reverse=True)[:3])
    return CostBreakdown(compute * 1e3, memory * 1e3, dispatch * 1e3, fallback * 1e3,
                         transfer * 1e3, total * 1e3, top)
