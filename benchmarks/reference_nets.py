"""The architectures Qualcomm AI Hub profiles, as torchvision defines them: shapes for the cost model.

AI Hub's image classifiers are torchvision's models (``qai_hub_models/models/<model>/model.py``
names the builder, e.g. ``tv_models.resnext50_32x4d``; MobileNet-v2 is its own copy of the
same architecture). Each is exported to ONNX at batch 1 with random weights (only shapes
matter) and analysed; the :class:`GraphStats` are cached as JSON under
``$XDG_CACHE_HOME/shadow-sweep/reference-nets`` (default ``~/.cache``), keyed by the
torch and torchvision versions, so the ONNX files (up to 350 MB for ViT-B/16) never stay on disk.

torchvision's C ops do not load with the CPU torch, but its model definitions do when the
package is not initialised (shared/ENVIRONMENT.md): :func:`_torchvision_models` does that.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import sys
import types
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shadow.devices.edge.graph import GraphStats, NodeStats, analyze, fold_constants, refine  # noqa: E402

#: AI Hub model id -> (torchvision builder, input side in pixels; model.py's input spec).
ARCHITECTURES: dict[str, tuple[str, int]] = {
    "resnet18": ("resnet18", 224), "resnet50": ("resnet50", 224), "resnet101": ("resnet101", 224),
    "resnext50": ("resnext50_32x4d", 224), "resnext101": ("resnext101_32x8d", 224),
    "wideresnet50": ("wide_resnet50_2", 224), "mobilenet_v2": ("mobilenet_v2", 224),
    "mobilenet_v3_large": ("mobilenet_v3_large", 224), "mobilenet_v3_small": ("mobilenet_v3_small", 224),
    "mnasnet05": ("mnasnet0_5", 224), "shufflenet_v2": ("shufflenet_v2_x0_5", 224),
    "squeezenet1_1": ("squeezenet1_1", 224), "googlenet": ("googlenet", 224),
    "inception_v3": ("inception_v3", 299), "densenet121": ("densenet121", 224),
    "efficientnet_b0": ("efficientnet_b0", 224), "efficientnet_b4": ("efficientnet_b4", 380),
    "efficientnet_v2_s": ("efficientnet_v2_s", 384), "regnet": ("regnet_x_3_2gf", 224),
    "regnet_y_800mf": ("regnet_y_800mf", 224), "convnext_tiny": ("convnext_tiny", 224),
    "convnext_base": ("convnext_base", 224), "swin_tiny": ("swin_t", 224), "swin_small": ("swin_s", 224),
    "swin_base": ("swin_b", 224), "vit": ("vit_b_16", 224),
}


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "shadow-sweep" / "reference-nets"


def _torchvision_models() -> Any:
    """``torchvision.models`` without running torchvision's __init__ (its C ops need a CUDA-era torch)."""
    if "torchvision.models" in sys.modules:
        return sys.modules["torchvision.models"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchvision is not installed: pip install -c constraints.txt -e '.[bench]'")
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("torchvision", package)
    return importlib.import_module("torchvision.models")


def export(model_id: str) -> bytes:
    """ONNX bytes of one architecture at batch 1 (opset 17, legacy exporter: seconds, not minutes)."""
    import torch

    builder, side = ARCHITECTURES[model_id]
    kwargs = {"aux_logits": False, "init_weights": False} if builder in ("googlenet", "inception_v3") else {}
    net = getattr(_torchvision_models(), builder)(weights=None, **kwargs).eval()
    buffer = io.BytesIO()
    # Not under no_grad: that takes nn.MultiheadAttention's fused fast path, which has no ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, side, side),), buffer, dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17)
    return buffer.getvalue()


def _versions() -> str:
    from importlib.metadata import version

    return f"torch{version('torch')}-tv{version('torchvision')}-ort{version('onnxruntime')}-folded"


def _to_json(stats: GraphStats) -> dict[str, Any]:
    return asdict(stats)


def _from_json(raw: dict[str, Any]) -> GraphStats:
    nodes = tuple(NodeStats(**{**n, "inputs": tuple(n["inputs"]), "outputs": tuple(n["outputs"])})
                  for n in raw["nodes"])
    return GraphStats(nodes, tuple(raw["graph_inputs"]), tuple(raw["graph_outputs"]), dict(raw["tensor_elements"]))


def graph_stats(model_id: str) -> GraphStats:
    """The architecture's per-node statistics after constant folding (from the cache when present)."""
    import onnx

    path = cache_dir() / _versions() / f"{model_id}.json"
    if path.exists():
        return refine(_from_json(json.loads(path.read_text())))  # the cache may predate a fusion rule
    stats = analyze(fold_constants(onnx.load_model_from_string(export(model_id))))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_to_json(stats)))
    tmp.replace(path)
    return stats
