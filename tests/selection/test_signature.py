"""The model signature: one record, written and read by the same code, strict about what it reads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from selection.errors import ConfigError
from selection.signature import INPUT_NAME, OUTPUT_NAME, ModelSignature, SignatureError

REPO = Path(__file__).resolve().parents[2]

#: What every sweep wrote into lineage["model_io"] (shadow/sweep/prepare.py since the skeleton).
SHIPPED = {"input": "features", "output": "probabilities", "features": ["temp", "dew"],
           "classes": ["dry", "rain"], "target": "rain", "input_shape": None}


def test_round_trip_is_the_identity() -> None:
    signature = ModelSignature.from_dict(SHIPPED)
    assert signature == ModelSignature(features=("temp", "dew"), classes=("dry", "rain"),
                                       target="rain")
    assert signature.to_dict() == SHIPPED
    assert ModelSignature.from_dict(json.loads(json.dumps(signature.to_dict()))) == signature
    assert signature.n_features == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        signature.input = "x"  # type: ignore[misc]


def test_signatures_already_on_disk_still_read() -> None:
    """Before input_shape existed the sweep wrote five keys; hand-made manifests used long names."""
    older = {k: v for k, v in SHIPPED.items() if k != "input_shape"}
    assert ModelSignature.from_dict(older) == ModelSignature.from_dict(SHIPPED)
    long = {"input_name": "x", "feature_columns": ["temp", "humidity"],
            "class_labels": ["dry", "rain"]}
    read = ModelSignature.from_dict(long)
    assert (read.input, read.output, read.features, read.classes) == (
        "x", None, ("temp", "humidity"), ("dry", "rain"))
    assert "feature_columns" not in read.to_dict()  # read, never written
    assert ModelSignature.from_dict({"input": "x", "class_labels": [0, 1]}).classes == ("0", "1")


def test_image_signature_checks_its_shape() -> None:
    image = ModelSignature(features=tuple(f"p{i}" for i in range(64)), input_shape=(1, 8, 8))
    assert ModelSignature.from_dict(image.to_dict()) == image
    assert ModelSignature(input_shape=(1, 8, 8)).n_features == 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], r"^manifest\.json must be a JSON object \(keys: input, output, features"),
        ({**SHIPPED, "featurs": []},
         r"^manifest\.json: unknown key 'featurs'; known keys: input, output, features, classes, "
         r"target, input_shape, label_features, label_codes\. Fix the spelling or remove it\.$"),
        ({**SHIPPED, "feature_columns": ["a", "b"]}, r"gives 'features' twice"),
        ({**SHIPPED, "input": ""}, r"manifest\.json's 'input' must be the graph's input name"),
        ({**SHIPPED, "features": "temp,dew"}, r"'features' must be a list or null; got 'temp,dew'"),
        ({**SHIPPED, "features": ["a", 3]}, r"'features' must be a list of strings; got \['a', 3\]"),
        ({**SHIPPED, "classes": ["dry", "dry"]}, r"'classes' must not repeat a name; \['dry'\]"),
        ({**SHIPPED, "input_shape": [1, 0]}, r"'input_shape' must be a list of positive integers"),
        ({**SHIPPED, "input_shape": [1, 3]}, r"must hold as many values as it lists features \(2\)"),
        ({**SHIPPED, "target": 5}, r"'target' must be a string or null; got 5"),
    ],
)
def test_malformed_signatures_say_what_and_where(data: object, message: str) -> None:
    with pytest.raises(SignatureError, match=message) as info:
        ModelSignature.from_dict(data, where="manifest.json")
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)


def test_the_graph_names_are_defined_once() -> None:
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    defined = [str(path.relative_to(repo)) for package in ("selection", "shadow")
               for path in sorted((repo / package).rglob("*.py"))
               if re.search(r"^(INPUT_NAME|OUTPUT_NAME)\s*=", path.read_text(), re.MULTILINE)]
    assert defined == ["selection/signature.py"]
    assert ModelSignature().input == INPUT_NAME and ModelSignature().output == OUTPUT_NAME


def test_the_edge_contract_imports_without_the_training_or_store_stack() -> None:
    """The slim runtime has numpy and onnxruntime only: these must not need more."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'pandas', 'sqlalchemy', 'torch', 'onnx', 'ray', 'shadow'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import selection.signature, selection.channels.layout, selection.artifacts.external_data\n"
        "import selection.runtime\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
