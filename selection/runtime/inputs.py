"""Turning a prediction request's rows into the model's input array.

Two spellings are accepted (``POST /predict`` documents them)::

    {"rows": [[0.1, 2.0, ...], ...]}                      # positional, model column order
    {"rows": [{"temp": 0.1, "humidity": 2.0, ...}, ...]}  # keyed by feature name

Every problem is a BadInputError whose message names the rule, the offending
row and the fix, because the caller is usually a person debugging a client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from selection.runtime.errors import BadInputError

#: Rows per request; bigger batches belong in an offline job, not a serving endpoint.
MAX_ROWS = 10_000


def parse_rows(
    payload: Any,
    *,
    n_features: int,
    features: Sequence[str] | None,
    dtype: type[np.floating[Any]] = np.float32,
    max_rows: int = MAX_ROWS,
) -> np.ndarray:
    """The ``(n_rows, n_features)`` array a request's JSON ``payload`` describes."""
    if not isinstance(payload, dict) or "rows" not in payload:
        got = type(payload).__name__ if not isinstance(payload, dict) else f"keys {sorted(payload)}"
        raise BadInputError(
            f'the request body must be a JSON object with a "rows" list; got {got}; '
            'send {"rows": [[' + ", ".join(["x"] * min(n_features, 3)) + ", ...]]}"
        )
    rows = payload["rows"]
    if not isinstance(rows, list) or not rows:
        raise BadInputError(
            f'"rows" must be a non-empty list of rows; got {_short(rows)}; '
            f"send at least one row of {n_features} numbers"
        )
    if len(rows) > max_rows:
        raise BadInputError(
            f'"rows" may hold at most {max_rows} rows per request; got {len(rows)}; '
            "split the batch into several requests"
        )
    out = np.empty((len(rows), n_features), dtype=dtype)
    for i, row in enumerate(rows):
        out[i] = _row_values(row, i, n_features, features)
    return out


def _row_values(row: Any, i: int, n_features: int, features: Sequence[str] | None) -> list[float]:
    if isinstance(row, dict):
        if not features:
            raise BadInputError(
                f"row {i} is keyed by name, but this model's manifest lists no feature names; "
                f"send each row as a list of {n_features} numbers in the model's column order"
            )
        unknown = sorted(set(row) - set(features))
        missing = [name for name in features if name not in row]
        if unknown or missing:
            raise BadInputError(
                f"row {i} must have exactly the model's features {list(features)}; "
                f"missing {missing}, unknown {unknown}; fix the keys of that row"
            )
        values = [row[name] for name in features]
    elif isinstance(row, list):
        if len(row) != n_features:
            raise BadInputError(
                f"every row must have {n_features} values (the model's features"
                f"{' ' + str(list(features)) if features else ''}); row {i} has {len(row)}; "
                "send one value per feature, in that order"
            )
        values = row
    else:
        raise BadInputError(
            f"row {i} must be a list of numbers or an object keyed by feature name; "
            f"got {_short(row)}"
        )
    for j, value in enumerate(values):
        # bool is an int in Python, but true/false is almost surely a client bug.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            name = features[j] if features else f"column {j}"
            raise BadInputError(
                f"every value must be a finite number; row {i}, {name} is {_short(value)}; "
                "encode missing values the way the model was trained (e.g. 0 after scaling)"
            )
    return values  # type: ignore[return-value]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
