"""One controller per channel, also across hosts that share one store (PostgreSQL advisory lock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selection.home import Home
from selection.store import Store
from shadow.loop.lock import ControllerBusyError, controller_lock
from tests.bad_inputs.contract import assert_user_error, run_cli
from tests.selection.conftest import backend_url  # noqa: F401  (fixture: SQLite, PostgreSQL)
from tests.shadow.loop.test_controller import setup


def test_a_second_controller_on_the_same_store_is_refused(
    tmp_path: Path, backend_url: str | None, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    _, config, home = setup(tmp_path, "auto")
    # With PostgreSQL the second controller runs from another home: another host's, in effect.
    other = tmp_path / "other-host" if backend_url else home
    store_flags = ["--store", backend_url] if backend_url else []
    with Store.open(Home(home), url=backend_url) as store, \
            controller_lock(Home(home), "production", store):
        outcome = run_cli(capsys, "watch", str(config), "--once", "--home", str(other),
                          *store_flags)
        assert_user_error(outcome, "one controller per channel", "already watched")
        if backend_url:
            assert "another host" in outcome.stderr
        with Store.open(Home(other), url=backend_url) as again:
            assert again.list_events(channel="production") == []  # nothing was done
    # Released with the with-block (and by the server if the holder dies): the next one gets it.
    with Store.open(Home(other), url=backend_url) as store, \
            controller_lock(Home(other), "production", store):
        pass


def test_the_database_lock_is_per_channel(tmp_path: Path, backend_url: str | None) -> None:  # noqa: F811
    if backend_url is None:
        pytest.skip("SQLite has no database lock: the home's lock file is the lock (tested above)")
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    with Store.open(a, url=backend_url) as first, Store.open(b, url=backend_url) as second:
        with controller_lock(a, "production", first), controller_lock(b, "staging", second):
            with pytest.raises(ControllerBusyError, match="another host"):
                with controller_lock(b, "production", second):
                    pass
