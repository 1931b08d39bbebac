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

Both are checked whole before anything is stored, then stored in chunks of
:data:`CHUNK_ROWS` (one transaction each), so the server writing the same log
never waits for more than one chunk.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from selection.errors import ConfigError
from selection.live.db import LogBusyError, connect, in_transaction, is_busy, log_channel
from selection.live.feedback import (
    MAX_ITEMS,
    Feedback,
    FeedbackError,
    FeedbackResult,
    LabelConflictError,
    UnknownRequestError,
    apply_feedback,
    check_feedback,
    parse_item,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Rows per transaction when a file is stored (labels, or a device log's requests): another
#: writer of the log (``shadow serve``) waits for one chunk at most, never for the whole file.
CHUNK_ROWS = 10_000


class RequestIdClashError(ConfigError):
    """A device's log reuses request ids this log holds for other inputs (nothing merged)."""


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


def ingest_labels(log_path: Path, items: list[Feedback], channel: str, *,
                  chunk_rows: int = CHUNK_ROWS) -> FeedbackResult:
    """Apply ``items`` to the channel's log: all checked first, then stored in chunks.

    Every label is checked against the log before any is stored (a read: no
    lock), so a bad line stores nothing. Then ``chunk_rows`` labels per
    transaction, each re-checked, so ``shadow serve``'s writer never waits long
    for this one. Only an I/O failure, a lock held past the busy timeout or a
    conflicting label sent meanwhile can stop it half way, and the message says
    how many were stored: rerunning the same file is safe (a label already
    stored changes nothing). A channel without a log is refused, creating nothing.
    """
    if not log_path.is_file():
        shown = ", ".join(repr(f.request_id) for f in items[:3])
        raise UnknownRequestError(
            f"{len(items)} label(s) name requests this channel's log does not hold: {shown}; "
            f"the channel has no prediction log yet ({log_path}); serve it (`shadow serve "
            f"--channel {channel}`) or merge a device's log first (nothing was stored)")
    conn = connect(log_path, channel=channel, create=False)
    try:
        _check_channel(conn, channel, log_path)
        check_feedback(conn, items)
        added = 0
        for start in range(0, len(items), chunk_rows):
            try:
                added += apply_feedback(conn, items[start:start + chunk_rows]).added
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                raise LogBusyError(
                    f"{log_path} stayed locked by another writer; {start} of {len(items)} "
                    "labels were stored; rerun the same file (stored labels change nothing)"
                ) from None
            except LabelConflictError as exc:
                if start == 0:
                    raise
                raise LabelConflictError(f"{exc}; {start} of {len(items)} labels (the lines "
                                         "before) were stored, sent meanwhile by another "
                                         "writer") from None
    finally:
        conn.close()
    distinct = len({(f.request_id, f.row) for f in items})
    return FeedbackResult(len(items), added, distinct - added)


def merge_log(log_path: Path, source: Path, channel: str, *,
              chunk_requests: int = CHUNK_ROWS) -> MergeResult:
    """Merge a prediction log copied from a device into the channel's log.

    Checked whole first (labels that differ from this log's refuse it: nothing
    merged), then merged ``chunk_requests`` requests (their predictions and
    labels) per transaction, so ``shadow serve``'s writer never waits long.
    Rows already here are kept, so a merge stopped half way (I/O, a lock held
    past the busy timeout) is finished by running it again.
    """
    try:
        src = connect(source, create=False, upgrade=False)  # the copy stays as it came
        try:
            src_channel = log_channel(src)
            tables = {str(n) for (n,) in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"{source} must be a prediction log written by shadow-sweep; it "
                          f"could not be read: {exc}") from None
    # All checked before the channel's log is opened: a refused merge creates nothing.
    lacking = sorted({"models", "requests", "predictions", "labels"} - tables)
    if lacking:
        raise ConfigError(f"{source} must be a prediction log written by shadow-sweep; it has "
                          f"no {', '.join(lacking)} table(s); copy the whole log file (with "
                          "its -wal file if the device was still running)")
    if src_channel is not None and src_channel != channel:
        raise ConfigError(f"{source} is the log of channel {src_channel!r}, not {channel!r}; "
                          f"pass --channel {src_channel}")
    conn = connect(log_path, channel=channel)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
    except sqlite3.Error:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
    counts = [0, 0, 0, 0]
    try:
        _check_merge(conn, source, None, None)  # the whole file, before anything is stored
        in_transaction(conn, lambda: _add(conn, counts, 0, _MERGE_MODELS, {}))
        bounds = _chunk_bounds(conn, chunk_requests)
        for done, (low, high) in enumerate(bounds):
            def chunk(low: str | None = low, high: str | None = high) -> None:
                _check_merge(conn, source, low, high)  # again: labels sent meanwhile
                for i, statement in enumerate(_MERGE_ROWS, 1):
                    _add(conn, counts, i, statement, {"low": low, "high": high})
                conn.execute(_MERGE_LABELS, {"low": low, "high": high})

            try:
                in_transaction(conn, chunk)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                raise LogBusyError(f"{log_path} stayed locked by another writer; {done} of "
                                   f"{len(bounds)} chunks of {source} were merged; run the "
                                   "same merge again (rows already merged are kept)") from None
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise LogBusyError(f"{log_path} stayed locked by another writer; run the same "
                               "merge again (rows already merged are kept)") from None
        raise ConfigError(f"{source} must be a prediction log written by shadow-sweep; merging "
                          f"it failed: {exc}; run it again once fixed (rows already merged "
                          "are kept)") from None
    finally:
        conn.close()
    return MergeResult(counts[1], counts[2], counts[3])


# A chunk is the request ids in (low, high]; None: unbounded on that side.
_RANGE = "(:low IS NULL OR {c} > :low) AND (:high IS NULL OR {c} <= :high)"
_MERGE_MODELS = ("INSERT OR IGNORE INTO main.models (sha256, candidate_id, classes) "
                 "SELECT sha256, candidate_id, classes FROM src.models")
_MERGE_ROWS = (
    "INSERT OR IGNORE INTO main.requests SELECT * FROM src.requests s WHERE "
    + _RANGE.format(c="s.request_id"),
    # Model keys are per file: translate them by sha256. predictions.label is
    # this log's copy of its labels, set below, never taken as is.
    "INSERT OR IGNORE INTO main.predictions SELECT p.request_id, p.row, mm.model_key, p.role, "
    "p.predicted, p.champion, NULL FROM src.predictions p "
    "JOIN src.models sm ON sm.model_key = p.model "
    "JOIN main.models mm ON mm.sha256 = sm.sha256 WHERE " + _RANGE.format(c="p.request_id"),
    "INSERT OR IGNORE INTO main.labels SELECT * FROM src.labels s WHERE "
    + _RANGE.format(c="s.request_id"),
)
_MERGE_LABELS = (
    "UPDATE main.predictions SET label = (SELECT l.label FROM main.labels l WHERE "
    "l.request_id = predictions.request_id AND l.row = predictions.row) WHERE label IS NULL "
    "AND " + _RANGE.format(c="request_id") + " AND (request_id, row) IN ("
    "SELECT request_id, row FROM src.labels s WHERE " + _RANGE.format(c="s.request_id")
    + " UNION SELECT request_id, row FROM src.predictions p WHERE "
    + _RANGE.format(c="p.request_id") + ")"
)


def _chunk_bounds(conn: sqlite3.Connection, size: int) -> list[tuple[str | None, str | None]]:
    """(low, high] ranges of request ids, ``size`` of the source's requests each, covering all."""
    bounds: list[tuple[str | None, str | None]] = []
    low: str | None = None
    while True:
        row = conn.execute("SELECT request_id FROM src.requests WHERE ?1 IS NULL OR "
                           "request_id > ?1 ORDER BY request_id LIMIT 1 OFFSET ?2",
                           (low, size - 1)).fetchone()
        if row is None:
            bounds.append((low, None))
            return bounds
        bounds.append((low, str(row[0])))
        low = str(row[0])


def _check_merge(conn: sqlite3.Connection, source: Path, low: str | None,
                 high: str | None) -> None:
    """Refuse a source whose requests or labels differ from this log's (in a range of ids)."""
    # The same id for other inputs is another request (a device's counter ids, reused ids):
    # merging would pair its predictions with this log's labels.
    other = conn.execute(
        "SELECT s.request_id FROM src.requests s JOIN requests m ON m.request_id = "
        "s.request_id WHERE m.inputs_sha256 != s.inputs_sha256 AND "
        + _RANGE.format(c="s.request_id") + " LIMIT 3", {"low": low, "high": high}).fetchall()
    if other:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM src.requests s JOIN requests m ON m.request_id = "
            "s.request_id WHERE m.inputs_sha256 != s.inputs_sha256 AND "
            + _RANGE.format(c="s.request_id"), {"low": low, "high": high}).fetchone()
        shown = ", ".join(repr(r) for (r,) in other)
        raise RequestIdClashError(
            f"{source} holds {n} request id(s) this log already holds for other inputs: "
            f"{shown}; each device must use ids of its own (uuid4, or counter ids prefixed "
            "with the device's name); nothing " + ("was merged" if low is None and high is None
                                                   else "more was merged"))
    clash = conn.execute(
        "SELECT s.request_id, s.row, l.label, s.label FROM src.labels s JOIN labels l "
        "ON l.request_id = s.request_id AND l.row = s.row WHERE l.label != s.label AND "
        + _RANGE.format(c="s.request_id") + " LIMIT 3", {"low": low, "high": high}).fetchall()
    if clash:
        shown = ", ".join(f"{r!r} row {w}: {a!r} vs {b!r}" for r, w, a, b in clash)
        raise LabelConflictError(f"{source} labels rows differently from this log: "
                                 f"{shown}; nothing " + ("was merged" if low is None and high
                                                         is None else "more was merged"))


def _add(conn: sqlite3.Connection, counts: list[int], i: int, sql: str,
         params: dict[str, str | None]) -> None:
    before = conn.total_changes
    conn.execute(sql, params)
    counts[i] += conn.total_changes - before


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
