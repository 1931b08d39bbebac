"""``shadow serve --shadows K / --shadow ID``: which challengers ride along, and bad choices."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from selection import Store, promote
from selection.errors import ConfigError, NotFoundError
from selection.home import Home
from selection.records import HoldoutRecord, SliceRecord, SweepRecord
from selection.testing import FEATURES, add_tiny_candidates
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


def test_shadows_come_from_the_champions_dataset_and_share_its_signature(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    # A newer sweep of another dataset, with better scores: not the champion's inputs.
    store.create_sweep(SweepRecord(sweep_id="sw-other", name="other", dataset="other-data",
                                   dataset_fingerprint="none",
                                   holdout=HoldoutRecord(0, 1, "0" * 64), config={},
                                   n_planned=6),
                       [SliceRecord("sw-other", "all", "all", {}, 1, "0" * 64)])
    add_tiny_candidates(store, [f"o-{i}" for i in range(6)], sweep_id="sw-other", hidden=8)
    assert store.latest_sweep_id() == "sw-other"
    assert [m.candidate_id for m in _load_shadows(store, _args(shadows=2))] == ["c-3", "c-2"]
    # A model of other columns, named: refused at start, in one line.
    base = store.get_candidate("c-0")
    io = {**base.lineage["model_io"], "features": [f"x{i}" for i in range(len(FEATURES))]}
    sha = base.onnx_sha256 or ""
    store.add_candidate(replace(base, candidate_id="x-0", lineage={"model_io": io}),
                        {sha: store.artifacts.read_verified(sha)})
    with pytest.raises(ConfigError, match="must take the champion's inputs and predict its "
                                          "classes; it has features .'x0'"):
        _load_shadows(store, _args(shadow=["x-0"]))
    code = main(["serve", "--home", str(store.home.root), "--shadow", "x-0", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "x-0" in err, err
