"""Qualcomm's HTP emulator through the ``onnxruntime-qnn`` plugin execution provider.

What works was measured (ENVIRONMENT.md): the QNN EP is a *plugin*, so it is
registered from ``onnxruntime_qnn.get_library_path()`` and attached to a
session with ``add_provider_for_devices``; naming it in ``providers=`` silently
runs everything on the CPU. The HTP needs static shapes, so callers hand it a
batch-1 model. Compiling writes an EPContext model (the context binary
embedded) that an edge app loads without recompiling.
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


def compile_model(model_bytes: bytes, qnn: Mapping[str, Any], numerics: str) -> Compiled:
    """Compile a static-shape model for the profile's HTP; ConversionError if the EP refuses it."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the plugin warns about Windows-only features on every session
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory(prefix="shadow-qnn-") as tmp:
        source, context = Path(tmp) / "model.onnx", Path(tmp) / "model_ctx.onnx"
        source.write_bytes(model_bytes)
        options.add_session_config_entry("ep.context_enable", "1")
        options.add_session_config_entry("ep.context_file_path", str(context))
        # Embedded: one self-contained file is what an edge app (and our store) wants.
        options.add_session_config_entry("ep.context_embed_mode", "1")
        try:
            options.add_provider_for_devices(_devices(), provider_options(qnn, numerics))
            session = ort.InferenceSession(str(source), options)
        except Exception as exc:
            raise ConversionError(f"QNN HTP compilation failed: {type(exc).__name__}: {exc}") from exc
        context_bytes = context.read_bytes() if context.exists() else b""
    placement = tuple(
        (sub.ep_name, node.op_type, node.name)
        for sub in session.get_provider_graph_assignment_info() for node in sub.get_nodes()
    )
    return Compiled(session, context_bytes, placement)
