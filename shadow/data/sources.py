"""Readers for array-shaped sources: IDX image files and scikit-learn's bundled sets.

Tabular CSV sources go through pandas in :mod:`shadow.data.loader`; images are
read straight into arrays (70,000 x 784 pixels would be a needlessly large
DataFrame).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from shadow.data.manifest import DatasetManifest
from shadow.errors import DatasetError

ARRAY_SOURCES = ("idx", "sklearn")

# IDX type codes (LeCun's MNIST format): only unsigned bytes occur in practice.
_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0:2] != b"\0\0" or data[2] != _IDX_UBYTE:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: holds {body.size} values, its header says {dims}; truncated?")
    return body.reshape(dims)


def read_arrays(manifest: DatasetManifest) -> tuple[np.ndarray, np.ndarray]:
    """``(features (n, d) float32, target (n,))`` of an array-shaped source."""
    source = manifest.source
    if source.kind == "sklearn":
        from sklearn import datasets  # scikit-learn comes with menelaus; only this source uses it

        bunch = getattr(datasets, source.location)()
        return np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target)
    images, labels = [], []
    for image_file, label_file in zip(source.images, source.labels):
        for path in (Path(image_file), Path(label_file)):
            if not path.is_file():
                hint = f" {source.install_hint}" if source.install_hint else ""
                raise DatasetError(f"dataset {manifest.name!r}: {path} does not exist.{hint}")
        pixels = read_idx(Path(image_file))
        images.append(pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0)
        labels.append(read_idx(Path(label_file)))
    features, target = np.concatenate(images), np.concatenate(labels)
    if len(features) != len(target):
        raise DatasetError(
            f"dataset {manifest.name!r}: {len(features)} images but {len(target)} labels."
        )
    return features, target
