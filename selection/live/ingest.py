"""Labels and logs collected elsewhere: label files, and prediction logs copied from devices.

``shadow feedback FILE`` takes either

- a label file: CSV with a header naming ``request_id`` and ``label`` (and
  optionally ``row``), or JSON Lines of ``{"request_id", "label"[, "row"]}``;
  a CSV label is text (a class label, or digits for a model without class
  labels); every line is checked before anything is stored;
- a prediction log (the SQLite file an edge app's ``ChannelRuntime(log=...)``
  wrote): its models, requests, predictions and labels are merged into the
  channel's log, rows already there kept (request ids are uuid4: the same id
  is the same request), a label that differs from one already stored is a
  conflict and nothing is merged.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from selection.errors import ConfigError
from selection.live.db import connect, log_channel
from selection.live.feedback import (
    MAX_ITEMS,
    Feedback,
    FeedbackError,
    FeedbackResult,
    LabelConflictError,
    apply_feedback,
    parse_item,
)

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class MergeResult:
    """What merging a device's log added."""

    requests: int
    predictions: int
    labels: int

    def as_dict(self) -> dict[str, int]:
        return {"requests_added": self.requests, "predictions_added": self.predictions,
                "labels_added": self.labels}


def is_log_file(path: Path) -> bool:
    """Whether ``path`` is a SQLite file (a prediction log) rather than a label file."""
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def read_labels(path: Path) -> list[Feedback]:
    """The labels in a CSV or JSON Lines file (by its first character), checked line by line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedbackError(f"{path} must be UTF-8 text (CSV or JSON Lines); byte {exc.start} "
                            "is not") from None
    items = _jsonl(text, path) if text.lstrip().startswith("{") else _csv(text, path)
    if not items:
        raise FeedbackError(f"{path} holds no labels; write a header 'request_id,label' and "
                            "one line per label, or JSON Lines")
    if len(items) > 10 * MAX_ITEMS:
        raise FeedbackError(f"{path} holds {len(items)} labels; at most {10 * MAX_ITEMS} per "
                            "file; split it")
    return items


def ingest_labels(log_path: Path, items: list[Feedback], channel: str) -> FeedbackResult:
    """Apply ``items`` to the channel's log (all or nothing)."""
    conn = connect(log_path, channel=channel)
    try:
        _check_channel(conn, channel, log_path)
        return apply_feedback(conn, items)
    finally:
        conn.close()


def merge_log(log_path: Path, source: Path, channel: str) -> MergeResult:
    """Merge a prediction log copied from a device into the channel's log (all or nothing)."""
    try:
        src = connect(source, create=False)
        src_channel = log_channel(src)
        src.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"{source} must be a prediction log written by shadow-sweep; it "
                          f"could not be read: {exc}") from None
    if src_channel is not None and src_channel != channel:
        raise ConfigError(f"{source} is the log of channel {src_channel!r}, not {channel!r}; "
                          f"pass --channel {src_channel}")
    conn = connect(log_path, channel=channel)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
    except sqlite3.Error:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            clash = conn.execute(
                "SELECT s.request_id, s.row, l.label, s.label FROM src.labels s JOIN labels l "
                "ON l.request_id = s.request_id AND l.row = s.row WHERE l.label != s.label "
                "LIMIT 3").fetchall()
            if clash:
                shown = ", ".join(f"{r!r} row {w}: {a!r} vs {b!r}" for r, w, a, b in clash)
                raise LabelConflictError(f"{source} labels rows differently from this log: "
                                         f"{shown}; nothing was merged")
            counts = []
            for statement in (
                "INSERT OR IGNORE INTO main.models (sha256, candidate_id, classes) "
                "SELECT sha256, candidate_id, classes FROM src.models",
                "INSERT OR IGNORE INTO main.requests SELECT * FROM src.requests",
                # Model keys are per file: translate them by sha256. predictions.label is
                # this log's copy of its labels, rebuilt below, never taken as is.
                "INSERT OR IGNORE INTO main.predictions SELECT p.request_id, p.row, "
                "mm.model_key, p.role, p.predicted, p.champion, NULL FROM src.predictions p "
                "JOIN src.models sm ON sm.model_key = p.model "
                "JOIN main.models mm ON mm.sha256 = sm.sha256",
                "INSERT OR IGNORE INTO main.labels SELECT * FROM src.labels",
            ):
                before = conn.total_changes
                conn.execute(statement)
                counts.append(conn.total_changes - before)
            conn.execute(
                "UPDATE main.predictions SET label = (SELECT l.label FROM main.labels l WHERE "
                "l.request_id = predictions.request_id AND l.row = predictions.row) WHERE "
                "label IS NULL AND (request_id, row) IN (SELECT request_id, row FROM src.labels "
                "UNION SELECT request_id, row FROM src.predictions)")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{source} must be a prediction log written by shadow-sweep; merging "
                          f"it failed: {exc}; nothing was merged") from None
    finally:
        conn.close()
    return MergeResult(counts[1], counts[2], counts[3])


def _check_channel(conn: sqlite3.Connection, channel: str, path: Path) -> None:
    recorded = log_channel(conn)
    if recorded is not None and recorded != channel:
        raise ConfigError(f"{path} is the log of channel {recorded!r}, not {channel!r}")


def _jsonl(text: str, path: Path) -> list[Feedback]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise FeedbackError(f"{path} line {number} must be one JSON object such as "
                                f'{{"request_id": "...", "label": "rain"}}; {exc}') from None
        items.append(parse_item(value, f"{path} line {number}"))
    return items


def _csv(text: str, path: Path) -> list[Feedback]:
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    missing = {"request_id", "label"} - set(fields)
    if missing:
        raise FeedbackError(f"{path} must start with a header naming request_id and label "
                            f"(and optionally row); got {fields[:5]}")
    items = []
    for number, record in enumerate(reader, 2):
        where = f"{path} line {number}"
        item: dict[str, object] = {"request_id": record.get("request_id"),
                                   "label": record.get("label")}
        raw_row = record.get("row")
        if raw_row not in (None, ""):
            if not str(raw_row).isdigit():
                raise FeedbackError(f"{where}: row must be an integer from 0; got {raw_row!r}")
            item["row"] = int(str(raw_row))
        if None in record:
            raise FeedbackError(f"{where} has more fields than the header")
        items.append(parse_item(item, where))
    return items
