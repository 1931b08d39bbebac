"""Tables into validated arrays: the rules every table meets, and its content fingerprint.

Whatever the source (a catalog file, appended batches, a folder of batch
files, a SQL table), its rows become one :class:`Dataset` through the
functions here, so every source is held to the same rules and fingerprinted
the same way. Reading the sources is :mod:`shadow.data.loader`'s job.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shadow.data.manifest import DatasetManifest
from shadow.data.target_bins import with_target
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
    #: The features that are earlier rows' labels (label codes; -1 before the first rows).
    label_features: tuple[str, ...] = ()
    #: The class of each label code, in order of first appearance in the rows (see
    #: :func:`with_label_lags`); empty without ``label_features``.
    label_codes: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])


def combined_dataset(frames: list[pd.DataFrame], manifest: DatasetManifest, fingerprint: str) -> Dataset:
    """The base table followed by batches, validated as one table, named by ``fingerprint``."""
    columns = list(frames[0].columns)
    # Reordered only where a batch's columns come in another order (a copy per frame is costly).
    combined = pd.concat([f if list(f.columns) == columns else f[columns] for f in frames],
                         ignore_index=True)
    # 'rows' in the manifest counts the catalog's rows; the batches come on top.
    grown = replace(manifest, declared_rows=None)
    dataset = dataset_from_frame(combined, grown)
    return replace(dataset, fingerprint=fingerprint, manifest=manifest)


def parse_batch(data: bytes, path: Path, manifest: DatasetManifest) -> pd.DataFrame:
    """A batch file's bytes as a frame: Parquet, or CSV written like the catalog's table.

    With ``[target_bins]`` the batch carries the numeric column, as the catalog's file does,
    and its target is cut from it by the same rule.
    """
    frame = _read_batch(data, path, manifest)
    if manifest.target_bins is None:
        return frame
    return with_target(frame, manifest.target_bins, manifest.target, f"batch {str(path)!r}")


def _read_batch(data: bytes, path: Path, manifest: DatasetManifest) -> pd.DataFrame:
    where = f"batch {str(path)!r}"
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(io.BytesIO(data))
        if suffix == ".csv":
            return pd.read_csv(io.BytesIO(data), index_col=manifest.source.index_col)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, IndexError) as exc:
        raise DatasetError(f"cannot read {where} as {suffix[1:].upper()}: {_short(exc)}; "
                           "fix the file.") from None
    except Exception as exc:  # pyarrow's errors (ArrowInvalid, ...) share no root we can name
        if type(exc).__module__.startswith(("pyarrow", "fastparquet")):
            raise DatasetError(f"cannot read {where} as Parquet: {_short(exc)}; fix the file.") from None
        raise
    raise DatasetError(
        f"{where}: the file name must end in .csv or .parquet (got {suffix or 'no suffix'!r}); "
        "rename it to say which it is."
    )


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def dataset_from_frame(frame: pd.DataFrame, manifest: DatasetManifest) -> Dataset:
    """Validate a table against its manifest and turn it into arrays."""
    where = f"dataset {manifest.name!r} ({manifest.path})"
    values, target, segments = validate_frame(frame, manifest, where)
    return dataset_from_arrays(values, target, manifest, segments)


def validate_frame(
    frame: pd.DataFrame, manifest: DatasetManifest, where: str, min_rows: int = MIN_ROWS,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The rules every table (the catalog's, or a batch) meets: columns, numbers, no gaps, time order.

    Returns the features as float32, the target and the segment columns.
    Row numbers in messages count the table's data rows from 0.
    """
    columns = [str(c) for c in frame.columns]
    time = (manifest.time_column,) if manifest.time_column else ()
    wanted = (manifest.target, *manifest.features, *manifest.segment_columns, *time)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DatasetError(
            f"{where}: column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} not in the table; it has "
            f"{', '.join(repr(c) for c in columns)}. Fix 'target'/'features' in the manifest."
        )
    if len(frame) < min_rows:  # before dtypes: an empty column reads as text
        raise DatasetError(
            f"{where}: has {len(frame)} rows; at least {min_rows} are needed for a holdout "
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
    if manifest.time_column:
        check_time_order(frame[manifest.time_column], where, manifest.time_column)
    values = features.to_numpy(dtype=np.float32)
    _reject_infinite(values, where)
    _refuse_continuous_target(target.to_numpy(), where, manifest.target)
    return values, target.to_numpy(), {c: segments[c].to_numpy() for c in manifest.segment_columns}


def time_values(column: pd.Series, where: str, name: str) -> pd.Series:
    """A time column as values that order correctly: numbers as they are, text parsed as dates."""
    _reject_missing(column.to_frame(), where, "time")
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return column.reset_index(drop=True)
    try:
        return pd.Series(pd.to_datetime(column, utc=True, format="mixed")).reset_index(drop=True)
    except (ValueError, TypeError):
        raise DatasetError(
            f"{where}: time column {name!r} holds values that are neither numbers nor dates "
            f"(e.g. {column.iloc[0]!r}); write numbers or ISO 8601 dates."
        ) from None


def plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read ``301``, not ``np.int64(301)``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def check_time_order(column: pd.Series, where: str, name: str) -> None:
    """Rows must not go back in time: the holdout is the newest rows only if row order is time order."""
    values = time_values(column, where, name)
    backwards = (values < values.shift(1)).to_numpy()  # the first row compares with NaN: False
    if backwards.any():
        row = int(np.argmax(backwards))
        raise DatasetError(
            f"{where}: time column {name!r} goes backwards at row {row} "
            f"({plain(column.iloc[row])!r} after {plain(column.iloc[row - 1])!r}); sort the rows "
            "by time first."
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
    _reject_infinite(values, where)
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
    # The lagged labels are derived from the rows; their names (and so how many) are part of
    # the data's identity, so data read with other lags is never taken for the same version.
    names = manifest.features + manifest.label_features
    fingerprint = _fingerprint(values, labels, names, class_names, segments)
    order = first_seen(labels, len(class_names)) if manifest.label_lags else np.arange(0)
    return Dataset(
        name=manifest.name,
        features=with_label_lags(values, labels, manifest.label_lags, order),
        labels=labels,
        feature_names=names,
        classes=class_names,
        fingerprint=fingerprint,
        manifest=manifest,
        input_shape=manifest.input_shape,
        segments=segments,
        label_features=manifest.label_features,
        label_codes=tuple(class_names[i] for i in order),
    )


def first_seen(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The class indices in the order each class first appears in ``labels``.

    A prefix of the rows gives the same order for the classes it holds, and a
    class that first appears later comes after them: codes in this order never
    change as a stream grows, unlike indices into the sorted classes (a new
    class sorted before "rain" would renumber it in every earlier row).
    """
    first = np.full(n_classes, len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels), dtype=np.int64))
    return np.argsort(first, kind="stable")[:int(np.count_nonzero(first < len(labels)))]


def with_label_lags(values: np.ndarray, labels: np.ndarray, lags: int,
                    order: np.ndarray | None = None) -> np.ndarray:
    """The rows with the labels of the ``lags`` rows before each appended as features.

    Column ``k`` (from 1) holds the code of the label ``k`` rows earlier: its
    position in ``order`` (:func:`first_seen`; default: the class index), and
    -1 where there is none (the first rows), which is what an app that has not
    seen a label yet sends too. Only for data whose manifest declares that a
    row's label is known before the next row is scored (``[lagged_labels]``).
    """
    if lags == 0:
        return values
    codes = labels
    if order is not None:
        rank = np.full(int(labels.max(initial=0)) + 1, -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        codes = rank[labels]
    lagged = np.full((len(labels), lags), -1.0, dtype=np.float32)
    for k in range(1, lags + 1):
        lagged[k:, k - 1] = codes[:-k]
    return np.ascontiguousarray(np.hstack([values, lagged]))


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


def _reject_infinite(values: np.ndarray, where: str) -> None:
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise DatasetError(f"{where}: infinite feature value at row {row}; clean the data.")


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
