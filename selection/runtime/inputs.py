"""Turning a prediction request's body into the model's input array.

Two spellings are accepted (``POST /predict`` documents them)::

    {"rows": [[0.1, 2.0, ...], ...]}                      # positional, model column order
    {"rows": [{"temp": 0.1, "humidity": 2.0, ...}, ...]}  # keyed by feature name

The body is checked before and while it is parsed, so that no input can cost
more than its size or crash the parser: UTF-8 only, nesting at most
:data:`MAX_JSON_DEPTH` deep (the C parser otherwise raises RecursionError),
integers of at most :data:`MAX_INT_DIGITS` digits (Python's own default
limit, enforced here even where a host process lifted it), every value a
finite number the model's input type can hold (beyond float32's range a
value becomes inf and the probabilities NaN).

Every problem is a BadInputError whose message names the rule, the offending
row and the fix, because the caller is usually a person debugging a client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from selection.runtime.errors import BadInputError

#: Rows per request; bigger batches belong in an offline job, not a serving endpoint.
MAX_ROWS = 10_000
#: Deepest nesting of arrays/objects in a body; a valid one needs 3 ({"rows": [[...]]}).
MAX_JSON_DEPTH = 32
#: Longest integer literal; CPython's default ``sys.get_int_max_str_digits()``.
MAX_INT_DIGITS = 4300

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_EXAMPLE = '{"rows": [[1.0, 2.0]]}'


def parse_json(body: bytes) -> Any:
    """The JSON value of a request ``body`` (BadInputError if it is not acceptable JSON)."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]  # RFC 8259 8.1: a parser may ignore a BOM (some Windows clients add one)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"the body must be JSON (UTF-8) such as {_EXAMPLE}; byte {exc.start} "
            f"is not UTF-8 ({exc.reason}); send the body UTF-8 encoded"
        ) from None
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise BadInputError(
            f"the body may nest arrays and objects at most {MAX_JSON_DEPTH} deep; it nests "
            f"{depth} deep; send rows as a list of lists of numbers, such as {_EXAMPLE}"
        )
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:  # only if a host lowered the recursion limit below the depth cap
        raise BadInputError(
            f"the body nests too deep to parse; send rows as a list of lists, such as {_EXAMPLE}"
        ) from None
    except ValueError as exc:
        raise BadInputError(
            f"the body must be JSON such as {_EXAMPLE}; it does not parse ({exc})"
        ) from None


def json_depth(body: bytes) -> int:
    """How deep arrays/objects nest in ``body`` (brackets inside strings do not count).

    Exact when the body holds more than :data:`MAX_JSON_DEPTH` brackets; below
    that it returns their count, an upper bound that passes the check anyway.

    Linear and in C (regex, translate, numpy): a realistic 340 kB body of
    10,000 rows takes ~5 ms, the worst 16 MB body a fraction of a second
    (measured), less than parsing it would.
    """
    opening = body.count(b"[") + body.count(b"{")
    if opening <= MAX_JSON_DEPTH:
        return opening
    unquoted = _STRING.sub(b"", _ESCAPE.sub(b"", body))
    brackets = unquoted.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = _STEP[np.frombuffer(brackets, dtype=np.uint8)]
    return max(int(np.cumsum(steps, dtype=np.int32).max()), 0)


def _parse_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"integers may have at most {MAX_INT_DIGITS} digits; one has {digits}")
    return int(text)


def parse_rows(
    payload: Any,
    *,
    n_features: int,
    features: Sequence[str] | None,
    dtype: type[np.floating[Any]] = np.float32,
    max_rows: int = MAX_ROWS,
    label_columns: Sequence[int] = (),
    n_classes: int = 0,
) -> np.ndarray:
    """The ``(n_rows, n_features)`` array a request's JSON ``payload`` describes.

    ``label_columns``: the columns that carry earlier rows' labels (the
    signature's ``label_features``); each value there must be a label code
    below ``n_classes`` (the signature's ``label_codes``), or -1 for a label
    the app does not know.
    """
    if not isinstance(payload, dict) or "rows" not in payload:
        got = type(payload).__name__ if not isinstance(payload, dict) else f"keys {sorted(payload)}"
        got = got if len(got) <= 80 else got[:77] + "..."
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
    # Parsed in float64 first: a value too big for the model's type must be an
    # error here, not an inf (and NaN probabilities) after the cast.
    wide = np.empty((len(rows), n_features), dtype=np.float64)
    for i, row in enumerate(rows):
        values = _row_values(row, i, n_features, features)
        try:
            wide[i] = values
        except OverflowError:  # an int beyond float64 (JSON allows 4300 digits)
            j = next(j for j, v in enumerate(values) if not _fits_float(v))
            raise _out_of_range(i, j, values[j], features, dtype) from None
    limit = float(np.finfo(dtype).max)
    bad = ~(np.abs(wide) <= limit)  # also true for NaN and inf
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise _out_of_range(i, j, float(wide[i, j]), features, dtype)
    if label_columns:
        _check_labels(wide, label_columns, n_classes, features)
    return wide.astype(dtype, copy=False)


def _check_labels(wide: np.ndarray, columns: Sequence[int], n_classes: int,
                  features: Sequence[str] | None) -> None:
    """Earlier labels must be label codes (-1: not known); the model never saw others."""
    part = wide[:, list(columns)]
    bad = (part != np.round(part)) | (part < -1) | (part >= n_classes)
    if bad.any():
        i, k = (int(x) for x in np.argwhere(bad)[0])
        name = _column(columns[k], features)
        raise BadInputError(
            f"row {i}: {name!r} carries an earlier row's label, so it must be that label's "
            f"code (0..{n_classes - 1}) or -1 when it is not known; got "
            f"{_short(float(part[i, k]))}; send the label's position in the model's "
            "label_codes (GET /model, or the manifest's model_io)"
        )


def _row_values(row: Any, i: int, n_features: int, features: Sequence[str] | None) -> list[Any]:
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
                f"missing {_short(missing)}, unknown {_short(unknown)}; fix the keys of that row"
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInputError(
                f"every value must be a finite number; row {i}, {_column(j, features)} is "
                f"{_short(value)}; encode missing values the way the model was trained "
                "(e.g. 0 after scaling)"
            )
    return values


def _fits_float(value: float) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _out_of_range(i: int, j: int, value: Any, features: Sequence[str] | None,
                  dtype: type[np.floating[Any]]) -> BadInputError:
    limit = float(np.finfo(dtype).max)
    return BadInputError(
        f"every value must be a finite number; row {i}, {_column(j, features)} is "
        f"{_short(value)}; values must also fit the model's {np.dtype(dtype).name} input "
        f"(|x| <= {limit:.7g}); send finite values on the scale the model was trained on"
    )


def _column(j: int, features: Sequence[str] | None) -> str:
    return features[j] if features else f"column {j}"


def _short(value: Any) -> str:
    if isinstance(value, (list, dict)) and len(value) > 8:
        value = value[:8] if isinstance(value, list) else dict(list(value.items())[:8])
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a huge int refuses str(); deep nesting refuses repr
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
