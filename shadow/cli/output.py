"""Rendering results for people (tables) and for scripts (csv, json).

JSON goes to stdout alone so ``shadow ... --format json | jq`` always parses;
progress and notes go to stderr.

pandas is imported only by the functions that build a frame: the parsers of
every verb import this module, and ``shadow VERB --help`` must stay quick.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "json")


def _plain(value: Any) -> Any:
    """A JSON-able version of one cell (NaN/NA -> null, datetimes -> ISO)."""
    if value is None:
        return None
    # A pandas value can only exist once pandas is loaded: never import it here.
    pd = sys.modules.get("pandas")
    if pd is not None and (value is pd.NA or value is pd.NaT):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):  # pd.Timestamp is a datetime
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()  # numpy scalar
    return value


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _cell(value: Any, digits: int = 4) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def render_frame(
    frame: pd.DataFrame, fmt: str, table_columns: Sequence[str] | None = None,
    out: TextIO | None = None, max_width: int = 48,
) -> None:
    """Write a frame as an aligned table (chosen columns), CSV or JSON records."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump(frame_records(frame), out, indent=2, default=str)
        out.write("\n")
        return
    if fmt == "csv":
        csv_frame = frame.copy()
        for column in csv_frame.columns:
            if csv_frame[column].map(lambda v: isinstance(v, (dict, list))).any():
                csv_frame[column] = csv_frame[column].map(lambda v: json.dumps(v, sort_keys=True))
        csv_frame.to_csv(out, index=False)
        return
    columns = [c for c in (table_columns or frame.columns) if c in frame.columns]
    if frame.empty:
        out.write("(no rows)\n")
        return
    cells = [[_clip(_cell(v), max_width) for v in row] for row in frame[columns].itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def render_mapping(data: dict[str, Any], fmt: str, out: TextIO | None = None) -> None:
    """A single result (a promotion, a sweep summary) as JSON or key: value lines."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump({k: _plain(v) for k, v in data.items()}, out, indent=2, default=str)
        out.write("\n")
        return
    if fmt == "csv":
        import pandas as pd

        render_frame(pd.DataFrame([data]), "csv", out=out)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        out.write(f"{key.ljust(width)}  {_cell(value)}\n")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def note(message: str) -> None:
    """A line for the person at the terminal (stderr: never mixes with data)."""
    print(message, file=sys.stderr, flush=True)
