"""One controller per channel, also across homes that share one store (and when a lock is lost)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selection.home import Home
from selection.store import Store
from shadow.loop.lock import ControllerBusyError, controller_lock
from tests.bad_inputs.contract import assert_user_error, run_cli
from tests.selection.conftest import backend_url  # noqa: F401  (fixture: SQLite, PostgreSQL)
from tests.shadow.loop.test_controller import setup


def shared(tmp_path: Path, backend_url: str | None) -> str:  # noqa: F811
    """One store two homes share: the PostgreSQL schema, or one SQLite file outside both."""
    return backend_url or f"sqlite:///{tmp_path / 'team.db'}"


def test_a_controller_of_another_home_on_the_same_store_is_refused(
    tmp_path: Path, backend_url: str | None, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    _, config, home = setup(tmp_path, "auto")
    url = shared(tmp_path, backend_url)
    other = tmp_path / "other-host"  # another home: another machine's, in effect
    with Store.open(Home(home), url=url) as store, controller_lock(Home(home), "production", store):
        outcome = run_cli(capsys, "watch", str(config), "--once", "--home", str(other),
                          "--store", url)
        assert_user_error(outcome, "one controller per channel", "another home")
        with Store.open(Home(other), url=url) as again:
            assert again.list_events(channel="production") == []  # nothing was done
    # Released with the with-block (and by the server or kernel if the holder dies).
    with Store.open(Home(other), url=url) as store, controller_lock(Home(other), "production", store):
        pass


def test_the_store_lock_is_per_channel(tmp_path: Path, backend_url: str | None) -> None:  # noqa: F811
    url = shared(tmp_path, backend_url)
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    with Store.open(a, url=url) as first, Store.open(b, url=url) as second:
        with controller_lock(a, "production", first), controller_lock(b, "staging", second):
            with pytest.raises(ControllerBusyError, match="another home"):
                with controller_lock(b, "production", second):
                    pass


def test_a_lost_postgresql_lock_stops_the_controller(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from tests.selection.conftest import PG_SERVER

    home = Home(tmp_path / "home")
    admin = create_engine(PG_SERVER.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  (no server here: the CI run starts one)
        message = f"PostgreSQL not reachable: {exc.__class__.__name__}; `.ci/run` starts it"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the backend must really be tested, never skipped
        pytest.skip(message)
    with Store.open(home, url=PG_SERVER) as store:
        with controller_lock(home, "lost-lock-test", store) as check:
            check()  # held
            key = "hashtextextended(current_schema() || ':' || 'shadow-watch:lost-lock-test', 0)"
            with admin.connect() as conn:  # the holder's session ends (a restarted server)
                k = int(conn.execute(text(f"SELECT {key}")).scalar_one())
                killed = conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :hi AND objid = :lo AND objsubid = 1"),
                    {"hi": (k >> 32) & 0xFFFFFFFF, "lo": k & 0xFFFFFFFF}).scalars().all()
            assert killed == [True]
            with pytest.raises(ControllerBusyError, match="was lost"):
                check()
    admin.dispose()
