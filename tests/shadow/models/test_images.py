"""The image path: IDX and scikit-learn sources, the CNN family, a real CNN sweep on Ray."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from selection.store import Store
from shadow.cli.main import main
from shadow.data.catalog import find_manifest
from shadow.data.loader import load_dataset
from shadow.data.sources import read_idx
from shadow.errors import ConfigError, DatasetError
from shadow.models import get_family
from shadow.models.training import train


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_truncation(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", images)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), images)
    with gzip.open(tmp_path / "bad.gz", "wb") as handle:
        handle.write(b"\0\0\x08\x01" + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_from_the_debian_package():
    dataset = load_dataset(find_manifest("fashion-mnist"))
    assert dataset.features.shape == (70000, 784) and dataset.input_shape == (1, 28, 28)
    assert dataset.classes == tuple(str(c) for c in range(10))
    assert 0.0 <= dataset.features.min() and dataset.features.max() <= 1.0
    assert np.bincount(dataset.labels[:60000]).tolist() == [6000] * 10


def test_digits_and_the_cnn_family_learn():
    dataset = load_dataset(find_manifest("digits"))
    assert dataset.features.shape == (1797, 64) and dataset.input_shape == (1, 8, 8)
    family = get_family("cnn")
    params = family.validate({"channels": 8, "epochs": 8, "lr": 0.01}, "test")
    trained = train(family, params, dataset.features[:1400], dataset.labels[:1400], 10, 0, (1, 8, 8))
    import torch

    with torch.no_grad():
        predicted = trained.module(torch.from_numpy(dataset.features[1400:])).argmax(1).numpy()
    assert (predicted == dataset.labels[1400:]).mean() > 0.8  # chance is 0.1


def test_cnn_needs_an_image_shape():
    family = get_family("cnn")
    params = family.validate({}, "test")
    with pytest.raises(ConfigError, match="needs images: set input_shape"):
        train(family, params, np.zeros((30, 8), np.float32), np.zeros(30, np.int64), 2, 0, None)


@pytest.mark.integration
@pytest.mark.slow
def test_cnn_sweep_on_digits_exports_a_flat_input_graph(tmp_path, ray_local, capsys):
    config = tmp_path / "digits.toml"
    config.write_text(
        '[sweep]\ndataset = "digits"\n[holdout]\nrows = 297\n[[slices]]\nstrategy = "all"\n'
        '[model]\nfamily = "cnn"\n[model.params]\nchannels = [4, 8]\nepochs = 6\nlr = 0.01\n'
    )
    home = tmp_path / "home"
    assert main(["sweep", "run", str(config), "--home", str(home), "--format", "json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] == 2 and summary["best_accuracy"] > 0.7
    with Store.open(home, create=False) as store:
        best = store.get_candidate(summary["best_candidate_id"])
        model = store.artifacts.read_verified(best.device("host-cpu").artifact_sha256)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 64]  # the edge app feeds flat pixels
    assert best.lineage["model_io"]["input_shape"] == [1, 8, 8]
