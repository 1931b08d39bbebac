"""The metadata store: sweeps, slices, candidates and their per-device results.

Contract (what producers and readers may rely on):

- Every write is one transaction; a failed call leaves the database as it was.
- Records handed in are never mutated; queries return fresh records.
- Only one process should write at a time (the sweep driver, or a CLI verb);
  any number may read, including while a sweep writes (SQLite runs in WAL).
- Artifacts are written before the rows that reference them, so a row never
  names a model file that is not on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType

from sqlalchemy import ColumnElement, Connection, Engine, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from selection.artifacts.content import ArtifactStore, check_sha256
from selection.errors import ConfigError, NotFoundError, StoreError
from selection.home import Home
from selection.records import (
    HOST_DEVICE,
    CandidateRecord,
    DeviceResult,
    EventRecord,
    SliceRecord,
    SweepRecord,
    SweepStatus,
    utc_now,
)
from selection.store import channel_rows, schema
from selection.store import rows as codec
from selection.store.engine import (
    WRITE_OPTION,
    display_url,
    init_schema,
    is_sqlite,
    make_engine,
    parse_url,
)
from selection.store.rows import Row

#: Environment variable naming the metadata database (flag ``--store`` wins).
STORE_ENV = "SHADOW_STORE"
_LIST_SWEEPS_HINT = "list sweeps with `shadow leaderboard --sweep all`"


class Store:
    """A handle on one metadata database plus the artifact store of one home.

    Build it with :meth:`Store.open`. Thread-safe for readers; writes are
    serialized by the database.
    """

    def __init__(self, engine: Engine, url: URL, home: Home) -> None:
        self._engine = engine
        self._url = url
        self.home: Home = home
        self.artifacts: ArtifactStore = ArtifactStore(home.artifacts_dir)

    # -- opening and closing ----------------------------------------------------

    @classmethod
    def open(
        cls,
        home: Home | str | Path | None = None,
        url: str | None = None,
        *,
        create: bool = True,
    ) -> Store:
        """Open the store of ``home`` (see :meth:`Home.resolve`).

        The database is ``url``, else ``$SHADOW_STORE``, else SQLite at
        ``home.db_path``. With ``create=False`` (read-only commands) nothing
        is created: a missing SQLite file raises NotFoundError.
        """
        home = home if isinstance(home, Home) else Home.resolve(home)
        url = url or os.environ.get(STORE_ENV) or None
        if url is None:
            if not create:
                home.require()
            parsed = URL.create("sqlite", database=str(home.db_path))
        else:
            parsed = parse_url(url)
            database = parsed.database
            if (
                not create
                and is_sqlite(parsed)
                and database not in (None, "", ":memory:")
                and not Path(database).is_file()
            ):
                raise NotFoundError(
                    f"no shadow store at {database} (from store URL {display_url(parsed)}); "
                    "run `shadow sweep run CONFIG` first, or fix --store / "
                    f"{STORE_ENV}"
                )
        if create:
            home.ensure()
        engine = make_engine(parsed)
        try:
            init_schema(engine, create=create, where=display_url(parsed))
        except DBAPIError as exc:
            engine.dispose()
            # A wrong URL, a missing database or a file that is not SQLite is the
            # user's to fix: say which store and why, without a driver traceback.
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise StoreError(
                f"cannot open the store at {display_url(parsed)}: {reason}; check --store / "
                f"{STORE_ENV} (the database must exist and be reachable) or --home"
            ) from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, parsed, home)

    @property
    def url(self) -> str:
        """The database URL, password masked (safe to print)."""
        return display_url(self._url)

    def close(self) -> None:
        """Release every pooled connection. The store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store(url={self.url!r}, home={str(self.home.root)!r})"

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: commits on normal exit, rolls back on error.

        On SQLite it takes the write lock up front (``BEGIN IMMEDIATE``) so a
        read-then-write sequence cannot be invalidated by a concurrent writer.
        """
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            # The database refused the write (a read-only file or home, a full
            # disk, a lost server): the transaction rolled back; say which store.
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise StoreError(
                f"the store at {self.url} refused a write: {reason}; nothing was changed; make "
                "the database (and its folder) writable, or check --store / --home"
            ) from None

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read connection: all its queries see one consistent state."""
        with self._engine.connect() as conn:
            if self._url.get_backend_name() == "postgresql":
                # READ COMMITTED, the server's default, gives each statement its own snapshot: a
                # reader of several statements (the Pareto front's four) could see a writer's
                # rows in some and not others. REPEATABLE READ is one snapshot for the block, and
                # a transaction that only reads never fails to serialize. (SQLite's read
                # transaction is one snapshot already.)
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def named_lock(self, name: str) -> Iterator[Callable[[], bool] | None]:
        """Try to hold the lock ``name`` for every process using this database, for the block.

        Yields None if another process holds it (never waits), else a check that says whether
        the lock is still held (call it before each step it guards). PostgreSQL: a session
        advisory lock (keyed by the schema in use and ``name``) on a connection of its own; the
        server drops it with the session (a dead holder, a restarted server, a session timeout),
        and the check then fails, so the holder stops before a second one takes over. Poolers in
        transaction mode (pgbouncer) break session locks: connect directly. SQLite: a flock on a
        file beside the database (``<db>.locks/``), so homes sharing one SQLite file exclude each
        other too; the kernel drops it if the holder dies.
        """
        if self._url.get_backend_name() != "postgresql":
            with self._file_lock(name) as held:
                yield (lambda: True) if held else None
            return
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        key = "hashtextextended(current_schema() || ':' || :name, 0)"
        with self._engine.connect() as conn:
            held = bool(conn.execute(text(f"SELECT pg_try_advisory_lock({key})"),
                                     {"name": name}).scalar())
            conn.commit()  # end the implicit transaction; the session lock stays

            def alive() -> bool:
                try:  # the lock lives exactly as long as this session
                    conn.execute(text("SELECT 1"))
                    conn.commit()
                except SQLAlchemyError:  # the session is gone (a dead or invalid connection)
                    return False
                return True
            try:
                yield alive if held else None
            finally:
                if held:
                    try:
                        conn.execute(text(f"SELECT pg_advisory_unlock({key})"), {"name": name})
                        conn.commit()
                    except SQLAlchemyError:
                        pass  # the session is gone, and the lock with it

    @contextmanager
    def _file_lock(self, name: str) -> Iterator[bool]:
        """A flock named ``name`` beside the SQLite file (True: held); an in-memory store: True."""
        import hashlib

        from selection.atomic import exclusive_lock

        database = self._url.database
        if not database or database == ":memory:":
            yield True
            return
        folder = Path(f"{database}.locks")
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]

        class _Busy(Exception):
            pass

        def busy(_holder: str) -> BaseException:
            return _Busy()
        lock = exclusive_lock(folder / f"{digest}.lock", busy)
        try:
            lock.__enter__()
        except _Busy:
            yield False
            return
        try:
            yield True
        finally:
            lock.__exit__(None, None, None)

    # -- sweeps ---------------------------------------------------------------------

    def create_sweep(self, sweep: SweepRecord, slices: Sequence[SliceRecord]) -> None:
        """Insert a sweep and its slices in one transaction.

        Raises StoreError if the sweep id exists, ConfigError if a slice
        belongs to another sweep.
        """
        sweep_row = codec.sweep_to_row(sweep)
        slice_rows = []
        for record in slices:
            if record.sweep_id != sweep.sweep_id:
                raise ConfigError(
                    f"every slice of sweep {sweep.sweep_id!r} must carry that sweep_id; "
                    f"slice {record.slice_id!r} has {record.sweep_id!r}; build it with "
                    f"sweep_id={sweep.sweep_id!r}"
                )
            slice_rows.append(codec.slice_to_row(record))
        try:
            with self.transaction() as conn:
                if self._sweep_row(conn, sweep.sweep_id) is not None:
                    raise StoreError(
                        f"sweep {sweep.sweep_id!r} already exists in the store at {self.url}; "
                        "resume it with `shadow sweep run CONFIG --resume "
                        f"{sweep.sweep_id}` or use a new sweep id"
                    )
                conn.execute(schema.sweeps.insert(), sweep_row)
                if slice_rows:
                    conn.execute(schema.slices.insert(), slice_rows)
        except SAIntegrityError as exc:
            raise StoreError(
                f"sweep {sweep.sweep_id!r} was not stored: every slice_id must be unique "
                f"within a sweep ({exc.orig}); fix the slice ids and retry"
            ) from None

    def finish_sweep(
        self, sweep_id: str, status: SweepStatus, finished_at: datetime | None = None
    ) -> None:
        """Set a sweep's final ``status`` and ``finished_at`` (default: now)."""
        codec.check_choice(status, codec.SWEEP_STATUSES, f"sweep {sweep_id!r} status")
        values = {"status": status, "finished_at": codec.encode_dt(finished_at or utc_now())}
        with self.transaction() as conn:
            result = conn.execute(
                schema.sweeps.update()
                .where(schema.sweeps.c.sweep_id == sweep_id)
                .values(**values)
            )
            if result.rowcount == 0:
                raise self._no_sweep(sweep_id)

    def reopen_sweep(self, sweep_id: str) -> None:
        """Mark a stored sweep as running again (a resume); its candidates stay as they are."""
        with self.transaction() as conn:
            result = conn.execute(
                schema.sweeps.update()
                .where(schema.sweeps.c.sweep_id == sweep_id)
                .values(status="running", finished_at=None)
            )
            if result.rowcount == 0:
                raise self._no_sweep(sweep_id)

    def get_sweep(self, sweep_id: str) -> SweepRecord:
        """The sweep ``sweep_id``; NotFoundError if there is none."""
        with self.snapshot() as conn:
            row = self._sweep_row(conn, sweep_id)
        if row is None:
            raise self._no_sweep(sweep_id)
        return codec.row_to_sweep(row)

    def list_sweeps(self) -> list[SweepRecord]:
        """Every sweep, newest first (ties broken by id, descending)."""
        table = schema.sweeps
        query = select(table).order_by(table.c.created_at.desc(), table.c.sweep_id.desc())
        with self.snapshot() as conn:
            rows = conn.execute(query).mappings().all()
        return [codec.row_to_sweep(row) for row in rows]

    def latest_sweep_id(self) -> str | None:
        """The id of the newest sweep, or None for an empty store."""
        table = schema.sweeps
        query = (
            select(table.c.sweep_id)
            .order_by(table.c.created_at.desc(), table.c.sweep_id.desc())
            .limit(1)
        )
        with self.snapshot() as conn:
            return conn.execute(query).scalar()

    def get_slices(self, sweep_id: str) -> list[SliceRecord]:
        """The slices of sweep ``sweep_id`` by slice id; NotFoundError if no such sweep."""
        table = schema.slices
        with self.snapshot() as conn:
            if self._sweep_row(conn, sweep_id) is None:
                raise self._no_sweep(sweep_id)
            rows = (
                conn.execute(
                    select(table).where(table.c.sweep_id == sweep_id).order_by(table.c.slice_id)
                )
                .mappings()
                .all()
            )
        return [codec.row_to_slice(row) for row in rows]

    # -- candidates -----------------------------------------------------------------

    def add_candidate(self, candidate: CandidateRecord, artifacts: Mapping[str, bytes]) -> None:
        """Store a candidate, its device results and its artifact files.

        ``artifacts`` maps sha256 -> bytes; each key is verified against its
        bytes (IntegrityError). The files are written first, then the rows in
        one transaction. Every sha the candidate references must be in
        ``artifacts`` or already stored. Re-adding a candidate id raises
        StoreError and changes nothing.
        """
        cid = candidate.candidate_id
        candidate_row = codec.candidate_to_row(candidate)
        metric_rows = codec.device_rows(candidate)
        with self.snapshot() as conn:
            if self._sweep_row(conn, candidate.sweep_id) is None:
                raise self._no_sweep(candidate.sweep_id)
            if self._candidate_row(conn, cid) is not None:
                raise self._duplicate_candidate(cid)
        for sha, data in artifacts.items():
            self.artifacts.put(data, expected_sha256=check_sha256(sha))
        referenced = {candidate.onnx_sha256} | {d.artifact_sha256 for d in candidate.devices}
        for sha in sorted(s for s in referenced if s is not None):
            if sha not in artifacts and not self.artifacts.exists(sha):
                raise StoreError(
                    f"candidate {cid!r} references artifact {sha}, which is neither in "
                    f"`artifacts` nor in the artifact store at {self.artifacts.root}; "
                    "pass the model bytes in `artifacts` keyed by their sha256"
                )
        try:
            with self.transaction() as conn:
                if self._candidate_row(conn, cid) is not None:
                    raise self._duplicate_candidate(cid)
                conn.execute(schema.candidates.insert(), candidate_row)
                if metric_rows:
                    conn.execute(schema.device_metrics.insert(), metric_rows)
        except SAIntegrityError as exc:
            raise StoreError(
                f"candidate {cid!r} was not stored: the database refused it ({exc.orig}); "
                "check that its sweep exists and its ids are unique"
            ) from None

    def candidate_ids(self, sweep_id: str) -> set[str]:
        """The ids of the candidates already stored for ``sweep_id`` (resume skips them)."""
        table = schema.candidates
        with self.snapshot() as conn:
            rows = conn.execute(select(table.c.candidate_id).where(table.c.sweep_id == sweep_id))
            return {row[0] for row in rows}

    def get_candidate(self, candidate_id: str) -> CandidateRecord:
        """The candidate ``candidate_id`` with its device results (host device first)."""
        with self.snapshot() as conn:
            row = self._candidate_row(conn, candidate_id)
            if row is None:
                raise NotFoundError(
                    f"no candidate {candidate_id!r} in the store at {self.url}; "
                    "list candidates with `shadow leaderboard` (ids are in the candidate_id column)"
                )
            devices = self._devices(conn, schema.device_metrics.c.candidate_id == candidate_id)
        return codec.row_to_candidate(row, devices.get(candidate_id, ()))

    def list_candidates(self, sweep_id: str | None = None) -> list[CandidateRecord]:
        """Candidates of ``sweep_id`` (every sweep if None), oldest first."""
        table = schema.candidates
        query = select(table).order_by(table.c.created_at, table.c.candidate_id)
        candidate_filter = None
        if sweep_id is not None:
            query = query.where(table.c.sweep_id == sweep_id)
            in_sweep = select(table.c.candidate_id).where(table.c.sweep_id == sweep_id)
            candidate_filter = schema.device_metrics.c.candidate_id.in_(in_sweep)
        with self.snapshot() as conn:
            rows = conn.execute(query).mappings().all()
            devices = self._devices(conn, candidate_filter)
        return [codec.row_to_candidate(r, devices.get(r["candidate_id"], ())) for r in rows]

    # -- the event log ----------------------------------------------------------------

    def append_event(self, record: EventRecord, conn: Connection | None = None) -> EventRecord:
        """Store event ``record``; returns the stored copy with its ``event_id``.

        In its own transaction, or in ``conn``, a caller's
        :meth:`transaction`, so the event commits with the change it explains
        (or not at all). The log is append-only: the store has no call that
        changes or removes an event. ConfigError for a record it cannot store
        (unknown kind, evidence that is not JSON, an ``event_id`` already set).
        """
        if conn is not None:
            return channel_rows.append_event(conn, record)
        with self.transaction() as own:
            return channel_rows.append_event(own, record)

    def list_events(
        self,
        channel: str | None = None,
        kinds: Iterable[str] | str | None = None,
        since_id: int | None = None,
        limit: int | None = None,
    ) -> list[EventRecord]:
        """Events newest first, filtered by channel, kinds and ``event_id > since_id``, up to ``limit``."""
        with self.snapshot() as conn:
            return channel_rows.list_events(conn, channel, kinds, since_id, limit)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _sweep_row(conn: Connection, sweep_id: str) -> Row | None:
        table = schema.sweeps
        return conn.execute(select(table).where(table.c.sweep_id == sweep_id)).mappings().first()

    @staticmethod
    def _candidate_row(conn: Connection, candidate_id: str) -> Row | None:
        table = schema.candidates
        query = select(table).where(table.c.candidate_id == candidate_id)
        return conn.execute(query).mappings().first()

    @staticmethod
    def _devices(
        conn: Connection, candidate_filter: ColumnElement[bool] | None
    ) -> dict[str, list[DeviceResult]]:
        """Device results grouped by candidate id, host device first."""
        query = select(schema.device_metrics)
        if candidate_filter is not None:
            query = query.where(candidate_filter)
        grouped: dict[str, list[DeviceResult]] = {}
        for row in conn.execute(query).mappings():
            grouped.setdefault(row["candidate_id"], []).append(codec.row_to_device(row))
        for results in grouped.values():
            results.sort(key=lambda d: codec.device_order(d.device, HOST_DEVICE))
        return grouped

    def _no_sweep(self, sweep_id: str) -> NotFoundError:
        return NotFoundError(f"no sweep {sweep_id!r} in the store at {self.url}; {_LIST_SWEEPS_HINT}")

    def _duplicate_candidate(self, candidate_id: str) -> StoreError:
        return StoreError(
            f"candidate {candidate_id!r} is already in the store at {self.url}; a candidate "
            "is stored once: skip ids returned by `Store.candidate_ids(sweep_id)` when resuming"
        )
