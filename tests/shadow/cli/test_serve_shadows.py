"""``shadow serve --shadows K / --shadow ID``: which challengers ride along, and bad choices."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection import Store, promote
from selection.errors import ConfigError, NotFoundError
from selection.home import Home
from selection.testing import add_tiny_candidates
from shadow.cli.cmd_serve import _load_shadows
from shadow.cli.main import main


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)
    with Store.open(Home.resolve(tmp_path / "home")) as opened:
        add_tiny_candidates(opened, ["c-0", "c-1", "c-2", "c-3"])
        promote(opened, "c-1")
        yield opened


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"channel": "production", "shadow": None, "shadows": None,
                                 "threads": 1, **kw})


def test_top_k_is_the_leaderboard_without_the_champion(store: Store) -> None:
    # add_tiny_candidates scores c-3 best, then c-2, c-1 (the champion), c-0.
    models = _load_shadows(store, _args(shadows=2))
    assert [m.candidate_id for m in models] == ["c-3", "c-2"]
    shas = {m.sha256 for m in models}
    assert shas == {store.get_candidate(c).onnx_sha256 for c in ("c-3", "c-2")}
    assert models[0].classes == ("dry", "rain")  # the candidate's signature, as the champion's
    named = _load_shadows(store, _args(shadow=["c-0", "c-1"]))  # the champion is left out
    assert [m.candidate_id for m in named] == ["c-0"]


def test_bad_shadow_choices(store: Store, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NotFoundError):
        _load_shadows(store, _args(shadow=["nope"]))
    with pytest.raises(ConfigError, match="--shadows 1 allows 1 shadows"):
        _load_shadows(store, _args(shadow=["c-0", "c-2"], shadows=1))
    device = tmp_path / "device"
    (device / "channels").mkdir(parents=True)
    code = main(["serve", "--home", str(device), "--shadows", "2", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
