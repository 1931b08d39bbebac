"""One prepared home shared by the corpus: a sweep of two tiny real candidates, one promoted.

Built without Ray (``selection.testing.add_tiny_candidates``), once per module;
a case that must change the home first (a plain folder where a channel link
goes) works on a copy (:func:`home_copy`).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

CANDIDATES = ("c-aaaaaaaaaaaa", "c-bbbbbbbbbbbb")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from selection import Store, promote
    from selection.testing import add_tiny_candidates

    with pytest.MonkeyPatch.context() as env:
        env.delenv("SHADOW_STORE", raising=False)
        env.delenv("SHADOW_HOME", raising=False)
        home = tmp_path_factory.mktemp("bad-inputs") / "home"
        with Store.open(home) as store:
            add_tiny_candidates(store, CANDIDATES)
            promote(store, CANDIDATES[0], reason="first")
        with sqlite3.connect(home / "shadow.db") as db:  # every row in the main file
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        yield home


@pytest.fixture
def home_copy(prepared: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared home (symlinks kept) for a case that alters it."""
    copy = tmp_path / "home"
    shutil.copytree(prepared, copy, symlinks=True)
    return copy


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own $SHADOW_STORE / $SHADOW_HOME must never be what a case hits.
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)


# The store conformance suite's backends (SQLite and a private PostgreSQL schema),
# for the cases whose point is what PostgreSQL does with a value.
from tests.selection.conftest import any_store, backend_url, home  # noqa: E402, F401
