"""The rules a batch meets beside the rows before it: same columns, label kind, time order.

:mod:`shadow.data.frames` holds the rules every table meets on its own; these
compare a batch with the dataset it joins (``shadow data append``, the files
of a folder dataset).
"""

from __future__ import annotations

import pandas as pd

from shadow.data.frames import plain, time_values
from shadow.data.manifest import DatasetManifest
from shadow.errors import DatasetError


def check_columns(frame: pd.DataFrame, base: pd.DataFrame, where: str) -> None:
    """A batch must have exactly the columns of the table before it (order aside)."""
    have, want = [str(c) for c in frame.columns], [str(c) for c in base.columns]
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing or extra:
        said = []
        if missing:
            said.append(f"lacks column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)}")
        if extra:
            said.append(f"has column{'s' if len(extra) > 1 else ''} "
                        f"{', '.join(repr(c) for c in extra)} the dataset does not")
        raise DatasetError(
            f"{where} {' and '.join(said)}; a batch must have exactly the dataset's columns "
            f"({', '.join(repr(c) for c in want)}): fix the file"
        )


def check_boundary(before: pd.Series, batch: pd.Series, where: str, name: str) -> None:
    """A batch's first time must not be before the last time of the rows it follows."""
    last = time_values(before, "the dataset", name).iloc[-1]
    first = time_values(batch, where, name).iloc[0]
    try:
        backwards = bool(first < last)
    except TypeError:
        raise DatasetError(
            f"{where}: time column {name!r} holds {type(first).__name__} values but the dataset's "
            f"are {type(last).__name__}; write times as the dataset does"
        ) from None
    if backwards:
        raise DatasetError(
            f"{where}: time goes backwards: its first row has {name} = {plain(batch.iloc[0])!r}, "
            f"before the dataset's last row ({plain(before.iloc[-1])!r}); append only rows newer "
            "than those already stored"
        )


def classes_of(frames: list[pd.DataFrame], manifest: DatasetManifest) -> set[str]:
    """Every label value (as text) the frames hold."""
    return {str(v) for f in frames for v in pd.unique(f[manifest.target])}


def new_labels(target: pd.Series, base_classes: set[str]) -> dict[str, int]:
    """Label value (as text) -> rows of ``target`` holding it, for values not in ``base_classes``."""
    counts = target.astype(str).value_counts(sort=False)
    return {label: int(n) for label, n in sorted(counts.items()) if label not in base_classes}


def check_label_type(batch: pd.Series, base: pd.Series, where: str, name: str) -> None:
    """A batch's labels must be of the dataset's kind (integer, float, boolean or text)."""
    # 1 and 1.0 would become two classes ("1" and "1.0"): the label must keep its kind.
    kinds = {"i": "integer", "u": "integer", "f": "float", "b": "boolean"}
    if kinds.get(batch.dtype.kind, "text") != kinds.get(base.dtype.kind, "text"):
        raise DatasetError(
            f"{where}: label column {name!r} holds {kinds.get(batch.dtype.kind, 'text')} values "
            f"(dtype {batch.dtype}) but the dataset's are {kinds.get(base.dtype.kind, 'text')} "
            f"(dtype {base.dtype}); write the labels as the dataset does"
        )
