"""Engine creation, per-backend connection settings and schema set-up.

SQLite gets WAL (readers never block the writer, so `shadow leaderboard` runs
while a sweep writes), a 30 s busy timeout (a second writer waits instead of
failing with "database is locked") and enforced foreign keys. Write
transactions on SQLite start with ``BEGIN IMMEDIATE``: a transaction that
reads then writes (promotion) would otherwise fail at once, busy timeout or
not, when another writer committed in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from selection.errors import ConfigError, StoreError
from selection.records import utc_now
from selection.store.migrations import upgrade
from selection.store.rows import encode_dt
from selection.store.schema import SCHEMA_VERSION, metadata, schema_version

#: Milliseconds a SQLite writer waits for another one before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option that marks a connection as about to write.
WRITE_OPTION = "shadow_write"
#: The integers every backend stores and compares exactly (SQLite INTEGER, PostgreSQL BIGINT).
INT64_RANGE = (-(2**63), 2**63 - 1)


def parse_url(url: str | URL) -> URL:
    """Parse a SQLAlchemy database URL, raising ConfigError on nonsense."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"--store / SHADOW_STORE must be a database URL such as "
            f"'sqlite:////abs/path/shadow.db' or 'postgresql://user@host/db'; got {url!r} ({exc})"
        ) from None
    # Plain postgresql:// means SQLAlchemy's default driver (psycopg2), which
    # we do not ship; psycopg 3 is the one installed with shadow-sweep.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_url(url: URL) -> str:
    """The URL as shown in messages, password masked."""
    return url.render_as_string(hide_password=True)


def is_sqlite(url: URL) -> bool:
    """Whether ``url`` names a SQLite database."""
    return url.get_backend_name() == "sqlite"


def make_engine(url: URL) -> Engine:
    """An engine for ``url`` with the backend settings described above."""
    try:
        engine = create_engine(url)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"the store URL {display_url(url)} needs a database driver that is not "
            f"installed ({exc}); install it "
            "(for PostgreSQL: `pip install 'psycopg[binary]'`)"
        ) from None
    if is_sqlite(url):
        _configure_sqlite(engine)
    event.listen(engine, "before_cursor_execute", _check_parameters)
    return engine


def check_bindable(value: Any) -> None:
    """Raise ConfigError for a value no backend stores as given.

    The one place every text and number reaching the database is checked,
    whatever command or file it came from (candidate ids, channel names,
    reasons, sweep names, ``--where`` values): PostgreSQL refuses a NUL
    character in text with a driver error (SQLite would store it), and both
    overflow on an integer past 64 bits. Refusing both on every backend keeps
    the backends alike and makes the error one line that names the value.
    """
    if isinstance(value, str):
        if "\x00" in value:
            shown = value if len(value) <= 60 else value[:60] + "..."
            raise ConfigError(
                f"text stored or looked up in the store must not contain a NUL character "
                f"(\\x00); got {shown!r}; remove it (ids, names, reasons and --where values "
                "are plain text)"
            )
    elif isinstance(value, int) and not isinstance(value, bool):
        low, high = INT64_RANGE
        if not low <= value <= high:
            raise ConfigError(
                f"a whole number stored or compared in the store must fit 64 bits "
                f"({low}..{high}); got {value}; use a smaller value"
            )
    elif isinstance(value, Mapping):
        for item in value.values():
            check_bindable(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_bindable(item)


def _check_parameters(
    _conn: Connection, _cursor: Any, _statement: str, parameters: Any, _context: Any,
    _executemany: bool,
) -> None:
    # Runs before the driver sees the statement, inside the caller's transaction:
    # the ConfigError rolls the transaction back like any other error.
    check_bindable(parameters)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would
        # emit its own deferred BEGIN) so the "begin" hook below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def stored_version(conn: Connection) -> int | None:
    """The schema version recorded in the database, None if it has no schema."""
    if not inspect(conn).has_table(schema_version.name):
        return None
    version = conn.execute(select(func.max(schema_version.c.version))).scalar()
    return int(version) if version is not None else None


def init_schema(engine: Engine, *, create: bool, where: str) -> None:
    """Create the tables (if ``create``), check the schema version, upgrade an old one.

    Raises StoreError for a database this code cannot use: one without our
    tables when ``create`` is False, or one written by a newer version. An
    older database is upgraded in place (see ``migrations.py``) even by a
    read-only command: the queries of this version need its columns.
    """
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: create})
        with conn.begin():
            version = stored_version(conn)
            if version is None:
                if not create:
                    raise StoreError(
                        f"{where} holds no shadow tables; point --home/--store at a "
                        "shadow store, or run `shadow sweep run CONFIG` to create one"
                    )
                metadata.create_all(conn)
                conn.execute(
                    schema_version.insert().values(
                        version=SCHEMA_VERSION, applied_at=encode_dt(utc_now())
                    )
                )
                return
            _refuse_newer(version, where)
    if version < SCHEMA_VERSION:
        _upgrade(engine, where)


def _refuse_newer(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store at {where} has schema version {version}, newer than the "
            f"{SCHEMA_VERSION} this shadow-sweep understands; upgrade shadow-sweep"
        )


def _upgrade(engine: Engine, where: str) -> None:
    """Migrate an old schema in one write transaction (all or nothing).

    Two processes may open the same old database at once: the write lock
    (SQLite's BEGIN IMMEDIATE, PostgreSQL's table lock) makes the second wait,
    and it re-reads the version so it does not migrate twice.
    """
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("LOCK TABLE schema_version IN EXCLUSIVE MODE")
            version = stored_version(conn) or SCHEMA_VERSION
            _refuse_newer(version, where)
            try:
                upgrade(conn, version, SCHEMA_VERSION)
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"the store at {where} has schema version {version} and upgrading it to "
                    f"{SCHEMA_VERSION} failed ({exc.__class__.__name__}: {exc}); nothing was "
                    "changed; back it up and report this with the message above"
                ) from None
