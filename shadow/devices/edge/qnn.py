"""Qualcomm's HTP emulator through the ``onnxruntime-qnn`` plugin execution provider.

What works was measured (ENVIRONMENT.md): the QNN EP is a *plugin*, so it is
registered from ``onnxruntime_qnn.get_library_path()`` and attached to a
session with ``add_provider_for_devices``; naming it in ``providers=`` silently
runs everything on the CPU. The HTP needs static shapes, so callers hand it a
batch-1 model. Compiling writes an EPContext model (the context binary
embedded) that an edge app loads without recompiling.

Two costs were measured (onnxruntime-qnn 2.7.0, a 2-layer MLP, 2-core host) and are
avoided: the QNN backend is unloaded when its last
session closes and loaded again by the next (about 40 ms of a 47 ms compile of a
small MLP), so the latest emulator session is kept; and every emulator call wakes
the emulator's eleven HVX/HMX/HLX threads, a hand-off that costs little on an idle
core (256 rows one per call: 35 ms) but two to three times more when the other core
runs another sweep worker, so the check rows run 64 per call (:func:`check_top1`:
under 1 ms for 256 rows), cross-checked against the batch-1 model.
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from selection.signature import INPUT_NAME, OUTPUT_NAME
from shadow.devices.errors import ConversionError

EP_NAME = "QNNExecutionProvider"
#: Set to "off" to force the CPU reference (e.g. to compare, or where the emulator misbehaves).
ENV_VAR = "SHADOW_EMULATOR"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

#: Rows per emulator call when checking (a static-batch copy of the compiled model).
CHECK_BATCH = 64
#: Check rows also run one per call through the batch-1 compiled model, and must match exactly.
CROSS_CHECK_ROWS = 8

_lock = threading.Lock()
_state: dict[str, Any] = {}


def emulator_status() -> tuple[bool, str | None]:
    """(available, why not). Registers the plugin once per process."""
    if os.environ.get(ENV_VAR, "").lower() in ("off", "0", "none", "cpu"):
        return False, f"${ENV_VAR}={os.environ[ENV_VAR]} turned the emulator off"
    with _lock:
        if "status" not in _state:
            _state["status"] = _register()
        return _state["status"]


def _register() -> tuple[bool, str | None]:
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        return False, f"onnxruntime-qnn's HTP emulator ships for Linux x86_64 only (this is {platform.machine()})"
    try:
        import onnxruntime_qnn
    except ImportError:
        return False, "onnxruntime-qnn is not installed (pip install onnxruntime-qnn)"
    try:
        ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
    except Exception as exc:  # registered earlier in this process by someone else: fine
        if "already registered" not in str(exc):
            return False, f"registering the QNN plugin failed: {exc}"
    if not _devices():
        return False, "the QNN plugin registered but offers no device"
    return True, None


def _devices() -> list[Any]:
    return [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]


def provider_options(qnn: Mapping[str, Any], numerics: str) -> dict[str, str]:
    """QNN EP options for a profile's [qnn] table and numerics."""
    options = {"backend_type": str(qnn.get("backend", "htp")), "soc_model": str(qnn["soc_model"]),
               "htp_arch": str(qnn["htp_arch"])}
    if numerics in ("fp16", "fp32"):
        # The HTP has no fp32 datapath; fp32 graphs run in fp16 when this is set.
        options["enable_htp_fp16_precision"] = "1"
    return options


@dataclass
class Compiled:
    """A model compiled for the HTP: a live emulator session, its context model and placement."""

    session: ort.InferenceSession
    context_bytes: bytes
    #: (execution provider, op type, node name) for every node of the compiled graph.
    placement: tuple[tuple[str, str, str], ...]

    def cpu_nodes(self, own_names: set[str] | frozenset[str]) -> list[tuple[str, str]]:
        """(op type, name) of the model's own nodes that fell back to the CPU.

        Quantize/Dequantize pairs at the graph boundary always run on the CPU
        (the app's float tensors enter there): they are not fallbacks.
        """
        return [(op, name) for ep, op, name in self.placement
                if ep != EP_NAME and op not in QDQ_OPS and name in own_names]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Top-1 class per row, one row per call (the compiled graph has batch 1)."""
        x = np.ascontiguousarray(features, dtype=np.float32)
        out = [self.session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + 1]})[0][0] for i in range(len(x))]
        return np.asarray(out).reshape(len(x), -1).argmax(axis=1).astype(np.int64)


def compile_model(model_bytes: bytes, qnn: Mapping[str, Any], numerics: str, keep_warm: bool = True,
                  context: bool = True) -> Compiled:
    """Compile a static-shape model for the profile's HTP; ConversionError if the EP refuses it.

    ``keep_warm``: keep this session as the one that holds the backend loaded (a batch-1
    model, small; the batched check copy is not kept, its activations can be large).
    ``context``: also write the EPContext model an edge app loads (``context_bytes``); the
    batched check copy is never shipped, so it skips serializing its binary.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the plugin warns about Windows-only features on every session
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory(prefix="shadow-qnn-") as tmp:
        source, context_path = Path(tmp) / "model.onnx", Path(tmp) / "model_ctx.onnx"
        source.write_bytes(model_bytes)
        if context:
            options.add_session_config_entry("ep.context_enable", "1")
            options.add_session_config_entry("ep.context_file_path", str(context_path))
            # Embedded: one self-contained file is what an edge app (and our store) wants.
            options.add_session_config_entry("ep.context_embed_mode", "1")
        try:
            options.add_provider_for_devices(_devices(), provider_options(qnn, numerics))
            session = ort.InferenceSession(str(source), options)
        except Exception as exc:
            raise ConversionError(f"QNN HTP compilation failed: {type(exc).__name__}: {exc}") from exc
        context_bytes = context_path.read_bytes() if context_path.exists() else b""
    if keep_warm:
        with _lock:
            # While one session lives the backend stays loaded: the next compile skips reloading it.
            _state["warm"] = session
    placement = tuple(
        (sub.ep_name, node.op_type, node.name)
        for sub in session.get_provider_graph_assignment_info() for node in sub.get_nodes()
    )
    return Compiled(session, context_bytes, placement)


def check_top1(compiled: Compiled, batched_model: bytes, qnn: Mapping[str, Any], numerics: str,
               features: np.ndarray) -> tuple[np.ndarray, str]:
    """Top-1 class of each row on the emulator, as ``compiled`` (batch 1) computes it, and how it ran.

    ``batched_model`` is the same model with the batch fixed to :data:`CHECK_BATCH` (unused,
    so a caller may pass ``b""``, when there are no more rows than :data:`CROSS_CHECK_ROWS`):
    compiled for the same SoC, without the EPContext file (it is never shipped), it runs the
    rows a batch per call. It is used only if it places every
    node where ``compiled`` does and gives bit-identical outputs on :data:`CROSS_CHECK_ROWS`
    sampled rows run one per call through ``compiled``; otherwise (or if it fails to compile
    or to run) every row runs one per call through ``compiled`` (``"per-row"``), as an edge app
    would run them.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    if len(x) <= CROSS_CHECK_ROWS:
        return compiled.predict(x), "per-row"
    try:
        batched = compile_model(batched_model, qnn, numerics, keep_warm=False, context=False)
        if sorted(batched.placement) != sorted(compiled.placement):
            return compiled.predict(x), "per-row"
        outputs = _run_batches(batched.session, x)
        sample = np.unique(np.linspace(0, len(x) - 1, CROSS_CHECK_ROWS).round().astype(np.int64))
        single = np.concatenate([compiled.session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + 1]})[0]
                                 for i in sample])
    # The batched copy is a shortcut, never a reason for the device run to fail: anything it
    # does wrong (a compile refused, a run the emulator rejects) means one row per call.
    except Exception:  # noqa: BLE001
        return compiled.predict(x), "per-row"
    if not np.array_equal(single, outputs[sample]):
        return compiled.predict(x), "per-row"
    return outputs.reshape(len(x), -1).argmax(axis=1).astype(np.int64), "batched"


def _run_batches(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Outputs for every row through a session with a static batch (the last batch padded)."""
    parts = []
    for start in range(0, len(x), CHECK_BATCH):
        chunk = x[start:start + CHECK_BATCH]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], CHECK_BATCH - len(chunk), axis=0)])
        parts.append(session.run([OUTPUT_NAME], {INPUT_NAME: padded})[0][:len(chunk)])
    return np.concatenate(parts)
