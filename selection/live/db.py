"""The live log's SQLite file: where it lives, its tables, and how every reader opens it.

One file per channel, ``$SHADOW_HOME/live/<channel>.db``. WAL, so the server's
writer, ``shadow feedback`` and ``shadow leaderboard --live`` work at once;
``synchronous=FULL``, so a committed batch survives a power cut, not just a
crash. What is stored, and why:

- ``models``: each model that answered (sha256, candidate id, class labels), so
  a label can be checked against the classes the champion could predict;
- ``requests``: one row per answered request: id, time, row count, the sha256 of
  the model's input bytes (a digest, not the inputs: the gate and the
  leaderboard need predictions and labels only, the log stays small, and
  no request payload is kept on disk), and the champion's sha256;
- ``predictions``: the predicted label of every model, per request row (the
  champion's and each shadow's), with the champion's label for that row beside
  it (agreement without a second join), so paired outcomes are one join;
- ``labels``: the labels that came back, one per request row: the truth.
  Each prediction row also carries its row's label (``predictions.label``,
  set in the same transaction that stores the label, or when a late
  prediction is written), and two triggers add every prediction that gets a
  label to ``board``: per (model, role) the count, how many were right, how
  many the champion got right on those rows, how many agreed with it. So the
  live leaderboard reads a handful of rows however many requests were
  labelled (``selection.live.board``; a test holds it to the plain join over
  ``labels``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from selection.errors import ConfigError, ShadowError

#: 1: the first logs (and, under the same number, model keys, then the board); 2: checked on
#: open, and a schema-1 log with model keys is upgraded (its board counted from its labels).
SCHEMA_VERSION = 2
#: How long a writer waits for another writer's transaction before it gives up (and retries,
#: or answers "busy"): every writer keeps its transactions short (bounded batches and chunks).
DEFAULT_BUSY_TIMEOUT_S = 10.0
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)


class LogBusyError(ShadowError, TimeoutError):
    """Another writer held the live log's write lock past the busy timeout (HTTP 503: retry)."""


class LiveLogError(ConfigError):
    """A live log that is damaged, not a log, too new, or of a layout too old to upgrade."""


def is_busy(exc: BaseException) -> bool:
    """Whether a sqlite3 error means "another connection holds the lock" (worth a retry)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)
LIVE_DIR = "live"
#: ``predictions.role``: 0 the champion answered, 1 a shadow scored.
ROLES = ("champion", "shadow")

_COUNT = (
    "INSERT INTO board VALUES (new.model, new.role, 1, new.predicted = new.label, "
    "new.champion = new.label, new.predicted = new.champion) ON CONFLICT (model, role) DO "
    "UPDATE SET n = n + 1, correct = correct + excluded.correct, champion_correct = "
    "champion_correct + excluded.champion_correct, agree = agree + excluded.agree;"
)

_BOARD_TABLE = (
    "CREATE TABLE IF NOT EXISTS board (model INTEGER NOT NULL, role INTEGER NOT NULL, "
    "n INTEGER NOT NULL, correct INTEGER NOT NULL, champion_correct INTEGER NOT NULL, "
    "agree INTEGER NOT NULL, PRIMARY KEY (model, role)) WITHOUT ROWID"
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # model_key: a small integer in each prediction row instead of a 64-character sha256.
    "CREATE TABLE IF NOT EXISTS models (model_key INTEGER PRIMARY KEY, sha256 TEXT NOT NULL "
    "UNIQUE, candidate_id TEXT NOT NULL, classes TEXT)",
    "CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, received_at REAL NOT NULL, "
    "n_rows INTEGER NOT NULL, inputs_sha256 TEXT NOT NULL, champion_sha256 TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS predictions (request_id TEXT NOT NULL, row INTEGER NOT NULL, "
    "model INTEGER NOT NULL, role INTEGER NOT NULL, predicted TEXT NOT NULL, "
    "champion TEXT NOT NULL, label TEXT, PRIMARY KEY (request_id, row, model)) WITHOUT ROWID",
    _BOARD_TABLE,
    # A prediction is counted once: when its label arrives, or when it arrives labelled.
    "CREATE TRIGGER IF NOT EXISTS board_on_label AFTER UPDATE OF label ON predictions "
    f"WHEN old.label IS NULL AND new.label IS NOT NULL BEGIN {_COUNT} END",
    "CREATE TRIGGER IF NOT EXISTS board_on_insert AFTER INSERT ON predictions "
    f"WHEN new.label IS NOT NULL BEGIN {_COUNT} END",
    "CREATE TABLE IF NOT EXISTS labels (request_id TEXT NOT NULL, row INTEGER NOT NULL, "
    "label TEXT NOT NULL, received_at REAL NOT NULL, PRIMARY KEY (request_id, row)) WITHOUT ROWID",
)


def live_log_path(home: str | Path, channel: str) -> Path:
    """``<home>/live/<channel>.db``: the channel's prediction log under a ``SHADOW_HOME``."""
    return Path(home) / LIVE_DIR / f"{channel}.db"


def connect(path: str | Path, *, channel: str | None = None, create: bool = True,
            busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, upgrade: bool = True
            ) -> sqlite3.Connection:
    """Open (and, with ``create``, set up) a live log; ``channel`` is recorded on first use.

    Autocommit mode: callers open their own ``BEGIN IMMEDIATE`` transactions.
    The log's schema version is checked: an older log is upgraded in place
    (``upgrade``; without it, one whose tables can still be read is opened as
    is), a newer one, an older layout that cannot be upgraded and a file that
    is not a prediction log are refused (:class:`LiveLogError`).
    """
    path = Path(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise FileNotFoundError(str(path))
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # The leaderboard reads every labelled row's predictions: keep the pages in memory.
        conn.execute("PRAGMA cache_size = -131072")
        conn.execute("PRAGMA mmap_size = 1073741824")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        _prepare(conn, path, channel=channel, create=create, upgrade=upgrade)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error) and is_busy(exc):
            raise LogBusyError(f"{path} stayed locked by another writer past "
                               f"{busy_timeout_s:g} s; retry shortly") from None
        if isinstance(exc, sqlite3.Error):
            raise LiveLogError(
                f"{path} is not a prediction log that can be read ({exc}): it is damaged or "
                "another kind of file; move it aside (the next `shadow serve` starts a new "
                "log) or restore it from a copy") from None
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, *, channel: str | None, create: bool,
             upgrade: bool) -> None:
    """Check the version; set up a new log, upgrade an older one, record the channel."""
    if not create:
        version = _version(conn, path)
        if version is None:
            raise LiveLogError(f"{path} is an SQLite file but not a prediction log (no meta "
                               "table); pass the log `shadow serve` or ChannelRuntime(log=...) "
                               "wrote")
        if version < SCHEMA_VERSION and upgrade:
            in_transaction(conn, lambda: _upgrade(conn, path))
        return

    def setup() -> None:
        version = _version(conn, path)
        if version is not None and version < SCHEMA_VERSION:
            _upgrade(conn, path)
        elif version is None and _tables(conn):
            raise LiveLogError(f"{path} is an SQLite file of other tables, not a prediction "
                               "log; move it aside or pass another --home/--channel")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        if channel is not None:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('channel', ?)", (channel,))

    in_transaction(conn, setup)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {str(name) for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}


def _version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The log's schema version (None: no meta table); refuses one newer than this code."""
    if "meta" not in _tables(conn):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row is not None else 1
    except ValueError:
        raise LiveLogError(f"{path} records schema version {row[0]!r}, not a number; move it "
                           "aside or restore it from a copy") from None
    if version > SCHEMA_VERSION:
        raise LiveLogError(f"{path} was written by a newer shadow-sweep (log schema {version}; "
                           f"this one reads up to {SCHEMA_VERSION}); upgrade shadow-sweep here "
                           "(pip install -U shadow-sweep)")
    return version


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Schema 1 to 2 in the open transaction: the board (counted from the labels) and its triggers.

    Schema 1 covers three layouts: the first (one sha256 per prediction row,
    no model keys), which cannot be upgraded and is refused; model keys without
    the board; and model keys with the board (only the version changes).
    """
    columns = {str(c[1]) for c in conn.execute("PRAGMA table_info(predictions)")}
    if not {"model", "champion", "label"} <= columns:
        raise LiveLogError(f"{path} is a prediction log of the first layout (schema 1, before "
                           "model keys), which this version cannot upgrade; move it aside (the "
                           "next `shadow serve` starts a new log); `shadow leaderboard --live` "
                           "of the old version still reads it")
    if "board" not in _tables(conn):
        # The label copy first (no triggers yet), then the counts from it, then the triggers.
        conn.execute("UPDATE predictions SET label = (SELECT l.label FROM labels l WHERE "
                     "l.request_id = predictions.request_id AND l.row = predictions.row) "
                     "WHERE label IS NULL")
        conn.execute(_BOARD_TABLE)
        conn.execute("INSERT INTO board SELECT model, role, COUNT(*), TOTAL(predicted = label), "
                     "TOTAL(champion = label), TOTAL(predicted = champion) FROM predictions "
                     "WHERE label IS NOT NULL GROUP BY model, role")
    conn.execute("DROP INDEX IF EXISTS predictions_labelled")  # schema 1's, replaced by board
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                 (str(SCHEMA_VERSION),))


def in_transaction(conn: sqlite3.Connection, work: Callable[[], None]) -> None:
    """Run ``work`` in one write transaction (``BEGIN IMMEDIATE``): committed whole, or rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        work()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def log_channel(conn: sqlite3.Connection) -> str | None:
    """The channel a log was written for (None if it never recorded one)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'channel'").fetchone()
    return None if row is None else str(row[0])
