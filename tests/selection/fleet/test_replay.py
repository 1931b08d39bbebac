"""A device never goes backwards: an old, validly signed version replayed to it is refused.

A real fleet server over a stale copy of the store (a mirror that stopped syncing, or an
attacker who kept old signed files) offers a device the row it ran before; the signature
verifies, so only the signed history row can tell it is a replay.
"""

from __future__ import annotations

import os
import shutil

import pytest

from selection import Store, promote
from selection.fleet.server import fleet_view
from selection.home import Home
from selection.runtime.remote import FleetClient, install
from selection.signing import TrustedKeys
from tests.bad_inputs.contract import run_cli
from tests.selection.fleet.conftest import Fleet, start_server
from tests.selection.fleet.test_serve_follow import ROW, wait_for


def test_an_older_signed_version_is_refused_and_a_newer_one_still_lands(
    fleet: Fleet, capsys: pytest.CaptureFixture[str],
) -> None:
    stale_root = fleet.tmp / "stale-home"
    with fleet.device("dev-1") as runtime:
        assert runtime.model.candidate_id == "c-a"  # history row 1
        shutil.copytree(fleet.store.home.root, stale_root, symlinks=True)  # the store as it was at row 1
        promote(fleet.store, "c-b")  # row 2
        wait_for(lambda: runtime.model.candidate_id == "c-b")
    cache = fleet.tmp / "devices" / "dev-1"
    linked = os.readlink(cache / "production")
    with Store.open(Home(stale_root)) as stale_store:
        stale = start_server(stale_store)
        try:
            with fleet.device("dev-1", url=stale.url) as runtime:
                wait_for(lambda: runtime.status()["remote"]["failures"] >= 2)
                error = runtime.status()["remote"]["last_error"]
                assert "history row 1 of 'production' is older than row 2" in error, error
                assert "replayed version" in error
                assert runtime.model.candidate_id == "c-b"  # still serving the newest it had
                assert runtime.predict(ROW)["candidate_id"] == "c-b"
                assert os.readlink(cache / "production") == linked
                # The stale server's operator is told why the device will not take its model.
                row = next(d for d in fleet_view(stale)["devices"] if d["device_id"] == "dev-1")
                assert row["ahead_of_store"] and not row["in_sync"]
                listed = run_cli(capsys, "fleet", "list", "--home", str(stale_root))
                assert listed.code == 0, listed.stderr
                assert "1 device(s) run a newer history row than the store's" in listed.stderr
                assert "restored from an older backup?" in listed.stderr
                # Another model under a row number the device already runs: refused too.
                promote(stale_store, "c-c")  # row 2 of the stale copy, another model
                wait_for(lambda: "claims history row 2" in
                         str(runtime.status()["remote"]["last_error"]))
                assert runtime.model.candidate_id == "c-b"
                # A newer row signed by the same key moves it forward as always.
                promote(stale_store, "c-a")  # row 3
                wait_for(lambda: runtime.model.candidate_id == "c-a")
                assert runtime.status()["remote"]["failures"] == 0
                wait_for(lambda: not next(d for d in fleet_view(stale)["devices"]
                                          if d["device_id"] == "dev-1")["ahead_of_store"])
        finally:
            stale.shutdown()
            stale.server_close()


def test_installing_the_version_the_cache_runs_again_is_harmless(fleet: Fleet) -> None:
    # A second follower of one cache, or a re-fetch to repair it, offers the linked version
    # itself: same row, same model, nothing to refuse.
    with fleet.device("dev-2") as runtime:
        version = runtime.model.version
    cache = fleet.tmp / "devices" / "dev-2"
    client = FleetClient(fleet.server.url, "production", "dev-2")
    offer = client.offer(None, None)
    assert offer is not None
    assert offer.version == version == os.path.basename(os.readlink(cache / "production"))
    model = install(client, cache, offer, trusted_keys=TrustedKeys.load([fleet.pub]))
    assert model.candidate_id == "c-a"
    assert os.path.basename(os.readlink(cache / "production")) == version
