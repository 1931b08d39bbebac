"""Champion and shadows on the same labelled requests: the live leaderboard and the gate's pairs.

Every row of :func:`live_board` pairs a model with the champion on exactly the
labelled request rows both answered (a shadow that was skipped under load is
not blamed or credited for rows it never saw): count, the model's accuracy
with a Wilson 95 % interval, the champion's accuracy on those same rows, and
how often the two agreed. The counts are kept as labels arrive (the log's
``board`` table, maintained by triggers in the label's own transaction), so
the board costs the same at 100 or 100,000 labels.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from selection.live.db import ROLES

#: z for a two-sided 95 % interval.
Z_95 = 1.959963984540054

# The counts the triggers keep (selection.live.db): a few rows, however many labels.
_BOARD_SQL = """
SELECT model, role, n, correct, champion_correct, agree FROM board WHERE n > 0
"""

#: The same figures from the labels themselves (the truth), for tests to hold the above to.
REFERENCE_SQL = """
SELECT p.model, p.role, COUNT(*), TOTAL(p.predicted = l.label),
       TOTAL(p.champion = l.label), TOTAL(p.predicted = p.champion)
FROM labels l JOIN predictions p ON p.request_id = l.request_id AND p.row = l.row
GROUP BY p.model, p.role
"""

_PAIRS_SQL = """
SELECT a.predicted = l.label, b.predicted = l.label
FROM labels l
JOIN predictions a ON a.request_id = l.request_id AND a.row = l.row
                  AND a.model = (SELECT model_key FROM models WHERE sha256 = ?)
JOIN predictions b ON b.request_id = l.request_id AND b.row = l.row
                  AND b.model = (SELECT model_key FROM models WHERE sha256 = ?)
ORDER BY l.request_id, l.row
"""


@dataclass(frozen=True)
class LiveRow:
    """One model against the champion, on the labelled rows both answered."""

    candidate_id: str
    sha256: str
    role: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    champion_accuracy: float
    delta: float
    agreement: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for ``correct`` successes in ``n`` trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def live_board(conn: sqlite3.Connection, *, sql: str = _BOARD_SQL) -> list[LiveRow]:
    """Every model that answered labelled requests, champions first, then by accuracy.

    ``sql``: :data:`REFERENCE_SQL` computes the same from the labels table (tests).
    """
    models = {key: (sha, cid) for key, sha, cid
              in conn.execute("SELECT model_key, sha256, candidate_id FROM models")}
    rows = []
    for key, role_key, n, correct, champion_correct, agree in conn.execute(sql):
        sha, name = models.get(key, ("unknown", "unknown"))
        role = ROLES[role_key] if role_key in (0, 1) else str(role_key)
        low, high = wilson(int(correct), int(n))
        accuracy, theirs = correct / n, champion_correct / n
        rows.append(LiveRow(name, sha, role, int(n), accuracy, low, high,
                            theirs, accuracy - theirs, agree / n))
    rows.sort(key=lambda r: (r.role != "champion", -r.accuracy, r.candidate_id))
    return rows


def paired_outcomes(conn: sqlite3.Connection, challenger_sha256: str, champion_sha256: str
                    ) -> tuple[list[bool], list[bool]]:
    """Per labelled row both models answered: (challenger correct, champion correct)."""
    pairs = conn.execute(_PAIRS_SQL, (challenger_sha256, champion_sha256)).fetchall()
    return [bool(a) for a, _ in pairs], [bool(b) for _, b in pairs]


def model_classes(conn: sqlite3.Connection, sha256: str) -> list[str] | None:
    """The class labels a logged model predicts (None: class indices, or not logged)."""
    row = conn.execute("SELECT classes FROM models WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None or row[0] is None else list(json.loads(row[0]))
