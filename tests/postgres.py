"""The tests' PostgreSQL: the server's URL and a private schema per test, dropped afterwards.

One place for what every PostgreSQL test needs: a schema of its own (``search_path`` in
the URL, so tests never see each other's rows), and the rule that an unreachable server
fails the test in CI (the backend must really be tested there) and skips it elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: The PostgreSQL server the tests use (ENVIRONMENT.md); `.ci/run` starts it if down.
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def private_schema_url() -> Iterator[str]:
    """A URL naming a new schema on :data:`PG_SERVER`; the schema is dropped on exit."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(PG_SERVER.replace("postgresql://", "postgresql+psycopg://"))
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
    except OperationalError as exc:
        admin.dispose()
        message = (f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc.__class__.__name__}); "
                   "`.ci/run` starts it")
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the backend must really be tested, never skipped
        pytest.skip(message)
    try:
        yield f"{PG_SERVER}?options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()
