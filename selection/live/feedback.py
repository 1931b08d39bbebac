"""Labels that come back for answered requests: parsed, checked, applied all or nothing.

A label names the request it belongs to: ``{"request_id": ..., "label": ...}``,
plus ``"row"`` (default 0) for a request that sent several rows. Rules:

- the request must be in the log (else UnknownRequestError, HTTP 404), and
  the row must be one it sent;
- the label must be a string or an integer, and one of the classes of the
  champion that answered (its manifest's class labels); a model without class
  labels predicts class indices, so its labels are integers (else
  BadLabelError, HTTP 422);
- idempotent: the same label for the same row again changes nothing
  (``unchanged``); a *different* label for a labelled row is a conflict
  (LabelConflictError, HTTP 409): the first label stands, because the gate
  may already have judged on it, and evidence is never rewritten silently.

One bad item refuses the whole call: nothing of it is stored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selection.errors import ConfigError, NotFoundError
from selection.live.ids import REQUEST_ID_RULE, valid_request_id

#: Labels per call (a bigger upload belongs in ``shadow feedback FILE`` or several calls).
MAX_ITEMS = 100_000
MAX_LABEL_CHARS = 200
_EXAMPLE = '{"request_id": "3f2a...", "label": "rain"}'


class FeedbackError(ConfigError):
    """A feedback body or item is malformed (HTTP 400)."""


class BadLabelError(ConfigError):
    """A label is not one the model that answered could predict (HTTP 422)."""


class LabelConflictError(ConfigError):
    """A row already has a different label (HTTP 409)."""


class UnknownRequestError(NotFoundError):
    """A label names a request (or row) the log does not hold (HTTP 404)."""


@dataclass(frozen=True)
class Feedback:
    """One label for one request row."""

    request_id: str
    label: str | int
    row: int = 0


@dataclass(frozen=True)
class FeedbackResult:
    """What a feedback call did."""

    received: int
    added: int
    unchanged: int

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "added": self.added, "unchanged": self.unchanged}


def parse_feedback(payload: Any) -> list[Feedback]:
    """``{request_id, label[, row]}``, a list of them, or ``{"labels": [...]}`` to Feedback items."""
    if isinstance(payload, dict) and "labels" in payload and "request_id" not in payload:
        payload = payload["labels"]
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise FeedbackError(f"feedback must be an object such as {_EXAMPLE} or a non-empty list "
                            f"of them; got {type(payload).__name__}")
    if len(items) > MAX_ITEMS:
        raise FeedbackError(f"at most {MAX_ITEMS} labels per call; got {len(items)}; split them "
                            "over several calls or use `shadow feedback FILE`")
    return [parse_item(item, f"item {i}" if len(items) > 1 else "the feedback")
            for i, item in enumerate(items)]


def parse_item(item: Any, where: str) -> Feedback:
    """One feedback object (``where`` names it in messages: "item 3", "line 7")."""
    if not isinstance(item, dict):
        raise FeedbackError(f"{where} must be an object such as {_EXAMPLE}; got "
                            f"{type(item).__name__}")
    unknown = sorted(set(item) - {"request_id", "label", "row"})
    if unknown:
        raise FeedbackError(f"{where} has unknown keys {unknown}; the keys are request_id, "
                            "label and (for a request of several rows) row")
    rid = item.get("request_id")
    if not valid_request_id(rid):
        raise FeedbackError(f"{where} needs a request_id ({REQUEST_ID_RULE}), the one its "
                            f"/predict answer carried; got {str(rid)[:80]!r}")
    label = item.get("label")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
        raise FeedbackError(f"{where}: label must be a class label (a string) or a class "
                            f"index (an integer); got {json.dumps(label)[:80]} "
                            f"({type(label).__name__})")
    if isinstance(label, str) and len(label) > MAX_LABEL_CHARS:
        raise FeedbackError(f"{where}: label may be at most {MAX_LABEL_CHARS} characters")
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < 10**6:
        raise FeedbackError(f"{where}: row must be the index of a row of the request (an "
                            f"integer from 0); got {json.dumps(row)[:40]}")
    return Feedback(str(rid), label, row)


def check_feedback(conn: sqlite3.Connection, items: Sequence[Feedback]) -> None:
    """Raise the error :func:`apply_feedback` would raise for ``items``; store nothing.

    A read transaction (the items go to a TEMP table): it takes no write lock,
    so it may check a large file while ``shadow serve`` keeps committing.
    """
    conn.execute("BEGIN")
    try:
        _load(conn, items)
        _check(conn)
    finally:
        conn.execute("ROLLBACK")


def apply_feedback(conn: sqlite3.Connection, items: Sequence[Feedback],
                   now: float | None = None) -> FeedbackResult:
    """Store ``items`` in one transaction, or raise and store none of them."""
    received_at = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")
    try:
        _load(conn, items)
        _check(conn)
        before = conn.total_changes
        conn.execute("INSERT OR IGNORE INTO labels SELECT request_id, row, label, ? FROM "
                     "feedback_in GROUP BY request_id, row", (received_at,))
        added = conn.total_changes - before
        # The leaderboard's copy of the label on each prediction of those rows.
        conn.execute("UPDATE predictions SET label = f.label FROM feedback_in f WHERE "
                     "predictions.request_id = f.request_id AND predictions.row = f.row AND "
                     "predictions.label IS NULL")
        conn.execute("DELETE FROM feedback_in")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    distinct = len({(f.request_id, f.row) for f in items})
    return FeedbackResult(len(items), added, distinct - added)


def _load(conn: sqlite3.Connection, items: Sequence[Feedback]) -> None:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS feedback_in (request_id TEXT, row INTEGER, "
                 "label TEXT, is_int INTEGER)")
    conn.execute("DELETE FROM feedback_in")
    conn.executemany("INSERT INTO feedback_in VALUES (?, ?, ?, ?)",
                     [(f.request_id, f.row, str(f.label), isinstance(f.label, int))
                      for f in items])


def _check(conn: sqlite3.Connection) -> None:
    missing = conn.execute(
        "SELECT f.request_id, f.row, r.n_rows FROM feedback_in f LEFT JOIN requests r "
        "ON r.request_id = f.request_id WHERE r.request_id IS NULL OR f.row >= r.n_rows "
        "LIMIT 3").fetchall()
    if missing:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM feedback_in f LEFT JOIN requests r ON r.request_id = "
            "f.request_id WHERE r.request_id IS NULL OR f.row >= r.n_rows").fetchone()
        shown = ", ".join(f"{rid!r}" + ("" if nr is None else f" row {row} (it sent {nr})")
                          for rid, row, nr in missing)
        raise UnknownRequestError(
            f"{n} label(s) name requests this channel's log does not hold: {shown}; send labels "
            "for request ids that /predict answered on this channel (nothing was stored)")
    for classes, label, is_int in conn.execute(
            "SELECT DISTINCT m.classes, f.label, f.is_int FROM feedback_in f JOIN requests r ON "
            "r.request_id = f.request_id JOIN models m ON m.sha256 = r.champion_sha256"):
        allowed = None if classes is None else json.loads(classes)
        if allowed is None and not (is_int or label.lstrip("-").isdigit()):
            raise BadLabelError(f"label {label!r} must be a class index (an integer): the model "
                                "that answered has no class labels (nothing was stored)")
        if allowed is not None and (is_int or label not in allowed):
            raise BadLabelError(f"label {json.loads(label) if is_int else label!r} must be one "
                                f"of the model's classes {allowed} (nothing was stored)")
    clash = conn.execute(
        "SELECT f.request_id, f.row, l.label, f.label FROM feedback_in f JOIN labels l ON "
        "l.request_id = f.request_id AND l.row = f.row WHERE l.label != f.label LIMIT 3"
    ).fetchall() or conn.execute(
        "SELECT request_id, row, MIN(label), MAX(label) FROM feedback_in GROUP BY request_id, "
        "row HAVING COUNT(DISTINCT label) > 1 LIMIT 3").fetchall()
    if clash:
        shown = ", ".join(f"{rid!r} row {row}: {old!r} vs {new!r}" for rid, row, old, new in clash)
        raise LabelConflictError(
            f"a labelled row keeps its first label; these differ: {shown}; resend the same "
            "label, or leave that row out (nothing was stored)")
