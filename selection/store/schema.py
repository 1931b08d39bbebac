"""The metadata store's tables (SQLAlchemy Core), portable to SQLite and PostgreSQL.

Conventions, chosen so the same DDL and queries run on both backends:

- JSON values are TEXT holding ``json.dumps(..., sort_keys=True)``: no
  dialect-specific JSON type, and equal values compare equal as strings.
- Datetimes are TEXT holding ISO-8601 in UTC with microseconds
  (``2024-05-01T12:00:00.000000+00:00``): fixed width, so string order is
  time order on every backend.
- Integers that may exceed 2**31 (seeds, sizes) are BIGINT.

Bump :data:`SCHEMA_VERSION` and add a migration in ``store/migrations.py``
when a table changes; the ``schema_version`` table tells an old file from a
new one, and opening an old database upgrades it in place.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

#: The version this code reads and writes.
SCHEMA_VERSION = 4

# Ids are producer-chosen strings; 200 characters is far above anything the
# sweep generates and keeps PostgreSQL VARCHARs bounded.
_ID = 200
_SHA = 64
_TS = 32  # len("2024-05-01T12:00:00.000000+00:00")

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", String(_TS), nullable=False),
)

sweeps = Table(
    "sweeps",
    metadata,
    Column("sweep_id", String(_ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("dataset_fingerprint", Text, nullable=False),
    Column("holdout_start", BigInteger, nullable=False),
    Column("holdout_stop", BigInteger, nullable=False),
    Column("holdout_rows_sha256", String(_SHA), nullable=False),
    Column("holdout_data_sha256", String(_SHA), nullable=True),
    Column("config", Text, nullable=False),
    Column("n_planned", Integer, nullable=False),
    Column("created_at", String(_TS), nullable=False),
    Column("status", String(16), nullable=False),
    Column("finished_at", String(_TS), nullable=True),
    # Version 3: the sweep's device names in order (JSON list), as data, so the
    # leaderboard does not read a producer's config layout to learn them.
    # Nullable only because ALTER TABLE cannot add a NOT NULL column without a
    # default; the migration fills every row and writers always do.
    Column("devices", Text, nullable=True),
    Index("ix_sweeps_created_at", "created_at"),
)

slices = Table(
    "slices",
    metadata,
    Column("sweep_id", String(_ID), ForeignKey("sweeps.sweep_id"), primary_key=True),
    Column("slice_id", String(_ID), primary_key=True),
    Column("strategy", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("n_rows", BigInteger, nullable=False),
    Column("rows_sha256", String(_SHA), nullable=False),
)

candidates = Table(
    "candidates",
    metadata,
    Column("candidate_id", String(_ID), primary_key=True),
    Column("sweep_id", String(_ID), ForeignKey("sweeps.sweep_id"), nullable=False),
    Column("slice_id", String(_ID), nullable=False),
    Column("family", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("train_seconds", Float, nullable=True),
    Column("onnx_sha256", String(_SHA), nullable=True),
    Column("lineage", Text, nullable=False),
    Column("created_at", String(_TS), nullable=False),
    # Version 3: the candidate this one refits (retrained on its slice plus the
    # holdout), NULL for a candidate the sweep planned. A refit's holdout
    # scores are in-sample, so every ranking query keeps ``refit_of IS NULL``.
    Column("refit_of", String(_ID), nullable=True),
    Index("ix_candidates_sweep_id", "sweep_id"),
    # Version 2: the leaderboard finds failed candidates without scanning a sweep.
    Index("ix_candidates_sweep_status", "sweep_id", "status"),
    # Version 3: a sweep's refits (the few rows ranking leaves out) by one index range.
    Index("ix_candidates_sweep_refit", "sweep_id", "refit_of"),
)

# Columns are exactly DeviceResult's fields (plus the candidate they belong to).
device_metrics = Table(
    "device_metrics",
    metadata,
    Column("candidate_id", String(_ID), primary_key=True),
    Column("device", String(_ID), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("accuracy", Float, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("host_latency_p50_ms", Float, nullable=True),
    Column("host_latency_p99_ms", Float, nullable=True),
    Column("size_bytes", BigInteger, nullable=True),
    Column("artifact_sha256", String(_SHA), nullable=True),
    Column("emulator", Text, nullable=True),
    Column("predictions_sha256", String(_SHA), nullable=True),
    Column("extra", Text, nullable=False),
    # Version 2: columns the leaderboard filters and ranks on in SQL, copied
    # from the candidate (sweep_id, also a refit's: version 3 leaves refits out
    # by ``candidates.refit_of``) and from ``extra`` at write time, so a
    # 100,000-candidate board answers "top 20 eligible on a device" from an
    # index instead of decoding JSON. Nullable because version-1 rows are
    # backfilled by the migration, and host rows carry no device extras.
    Column("sweep_id", String(_ID), nullable=True),
    Column("candidate_ok", Boolean, nullable=True),
    Column("has_fallback", Boolean, nullable=True),
    Column("peak_activation_bytes", BigInteger, nullable=True),
    Column("memory_budget_bytes", BigInteger, nullable=True),
    Column("device_eligible", Boolean, nullable=True),
    Column("ineligible_reason", Text, nullable=True),
    ForeignKeyConstraint(["candidate_id"], ["candidates.candidate_id"]),
    # Covers what eligibility and the default order read, so ranking a device's
    # 100,000 rows is an index-only scan (no lookups into the wide table rows).
    Index(
        "ix_device_metrics_board", "sweep_id", "device", "accuracy", "latency_ms", "size_bytes",
        "candidate_id", "status", "candidate_ok", "has_fallback", "device_eligible",
        "peak_activation_bytes", "memory_budget_bytes",
    ),
)

#: Columns version 2 added to ``device_metrics`` (the migration adds exactly these).
DEVICE_METRICS_V2 = (
    "sweep_id",
    "candidate_ok",
    "has_fallback",
    "peak_activation_bytes",
    "memory_budget_bytes",
    "device_eligible",
    "ineligible_reason",
)

#: Columns version 3 added, by table (the migration adds exactly these).
V3_COLUMNS = {"sweeps": ("devices",), "candidates": ("refit_of",)}
#: Indexes version 3 added.
V3_INDEXES = ("ix_candidates_sweep_refit",)

# Append-only: rows are inserted, never updated or deleted. Each row records
# the full state it set the channel to, so any row can be re-materialized.
promotions = Table(
    "promotions",
    metadata,
    Column("history_id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("candidate_id", String(_ID), ForeignKey("candidates.candidate_id"), nullable=False),
    Column("device", String(_ID), nullable=False),
    Column("sha256", String(_SHA), nullable=False),
    Column("previous_candidate_id", String(_ID), nullable=True),
    Column("previous_sha256", String(_SHA), nullable=True),
    Column("at", String(_TS), nullable=False),
    Column("who", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("reverts_id", Integer, ForeignKey("promotions.history_id"), nullable=True),
    Column("decision", Text, nullable=False),
    Index("ix_promotions_channel", "channel", "history_id"),
)

# The current model of each channel: one row per channel, changed in the same
# transaction as the history row that explains the change.
channels = Table(
    "channels",
    metadata,
    Column("channel", String(64), primary_key=True),
    Column("candidate_id", String(_ID), ForeignKey("candidates.candidate_id"), nullable=False),
    Column("device", String(_ID), nullable=False),
    Column("sha256", String(_SHA), nullable=False),
    Column("history_id", Integer, ForeignKey("promotions.history_id"), nullable=False),
    Column("updated_at", String(_TS), nullable=False),
)

# Version 4, append-only like ``promotions``: what the controller did and why
# (triggers, sweeps, gate decisions, proposals, approvals, promotions), each
# with its reason and its evidence (canonical JSON). The ids an event names are
# not foreign keys on purpose: a log records what happened even when the row it
# is about never came to be (a sweep that failed before it was stored).
events = Table(
    "events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", String(_TS), nullable=False),
    Column("data_version", Text, nullable=True),
    Column("sweep_id", String(_ID), nullable=True),
    Column("candidate_id", String(_ID), nullable=True),
    Column("history_id", Integer, nullable=True),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    # A channel's log newest first, and one kind of it ("the last sweep_started"),
    # each by one index range.
    Index("ix_events_channel", "channel", "event_id"),
    Index("ix_events_channel_kind", "channel", "kind", "event_id"),
)

#: Tables version 4 added (the migration creates exactly these, with their indexes).
V4_TABLES = ("events",)
