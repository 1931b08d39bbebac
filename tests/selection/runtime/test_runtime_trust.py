"""What the runtime trusts on its own (no store): its channels folder, the manifest's sha256
and signature, and models that read nothing but themselves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from selection import Store, promote
from selection.artifacts.content import sha256_bytes
from selection.runtime import ChannelRuntime, ModelLoadError, load_version
from selection.testing import CLASSES, FEATURES, add_tiny_candidates
from tests.selection.hostile import file_reading_classifier

ROW = [0.5] * len(FEATURES)


@pytest.fixture
def version(store: Store) -> Path:
    add_tiny_candidates(store, ["c-a"])
    promote(store, "c-a")
    return store.home.channel_dir("production").resolve()


def _edit_manifest(version: Path, **changes: object) -> None:
    path = version / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


def test_a_copied_channels_folder_serves_on_an_edge_device(store: Store, version: Path,
                                                           tmp_path: Path) -> None:
    """Relative links survive a copy (rsync -a, cp -a): the copy is trusted on its own."""
    copy = tmp_path / "device" / "channels"
    shutil.copytree(store.home.channels_dir, copy, symlinks=True)
    shutil.rmtree(store.home.root)  # nothing of the home is left: only the copy
    with ChannelRuntime(copy, reload=False) as runtime:
        assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-a"


def test_the_signature_comes_from_the_manifest_and_is_validated(version: Path) -> None:
    model = load_version(version, channel="production")
    assert model.signature is not None and model.signature.classes == CLASSES
    assert (model.input_name, model.features, model.classes) == ("features", FEATURES, CLASSES)

    _edit_manifest(version, model_io={"input": "features", "features": list(FEATURES),
                                      "clases": ["dry", "rain"]})
    with pytest.raises(ModelLoadError) as info:
        load_version(version, channel="production")
    message = str(info.value)
    assert "\n" not in message and "manifest.json's 'model_io': unknown key 'clases'" in message
    assert "known keys: input, output, features, classes" in message


def test_manifests_without_or_with_the_long_signature_still_load(version: Path) -> None:
    _edit_manifest(version, model_io={"input_name": "features", "feature_columns": list(FEATURES),
                                      "class_labels": list(CLASSES)})
    model = load_version(version, channel="production")
    assert (model.output_name, model.features, model.classes) == ("probabilities", FEATURES, CLASSES)
    _edit_manifest(version, model_io=None)  # a manifest of a model stored without a signature
    model = load_version(version, channel="production")
    assert (model.signature, model.input_name, model.features) == (None, "features", None)


def test_a_model_that_reads_files_is_refused_before_onnx_runtime_sees_it(
        version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret.txt").write_bytes(b"x" * 64)
    monkeypatch.chdir(tmp_path)  # where ORT would resolve the location
    hostile = file_reading_classifier("secret.txt")
    (version / "model.onnx").write_bytes(hostile)
    _edit_manifest(version, sha256=sha256_bytes(hostile))  # the sha256 agrees: not enough
    with pytest.raises(ModelLoadError) as info:
        load_version(version, channel="production")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"refusing version {version.name}: {version / 'model.onnx'} "
                              "must be a self-contained ONNX model")  # the verdict first
    assert "tensor 'leak' points at 'secret.txt'" in message
