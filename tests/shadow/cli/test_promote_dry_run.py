"""`shadow promote --dry-run` says what the real run would do: the gate's decision, then promote's own checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from selection import Home, Store
from selection.channels.promotion import history
from shadow.cli.main import main
from tests.selection.gate.test_gate import HALF, PERFECT, Lab


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with one sweep and two real ONNX candidates: c-best (right) and c-half (75 %)."""
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)
    root = tmp_path / "home"
    with Store.open(Home.resolve(root)) as store:
        lab = Lab(store)
        h = lab.sweep("sw-1", 0)
        lab.candidate("c-best", "sw-1", PERFECT, h)
        lab.candidate("c-half", "sw-1", HALF, h)
    return root


def _plan(capsys, home: Path, *args: str) -> dict:
    code, out, err = run_cli(capsys, "promote", *args, "--dry-run", "--format", "json", "--home", str(home))
    assert code == 0, err
    return json.loads(out)


def test_dry_run_refuses_a_corrupt_artifact_as_the_real_run_does(home: Path, capsys) -> None:
    with Store.open(Home.resolve(home), create=False) as store:
        path = store.artifacts.path(store.get_candidate("c-best").onnx_sha256)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1])  # truncated: no longer hashes to its name

    plan = _plan(capsys, home, "c-best")
    assert plan["gate"] == "pass"  # no champion yet: the gate has nothing against it ...
    assert plan["outcome"].startswith("refused: ") and "must hash to its name" in plan["outcome"]
    code, out, err = run_cli(capsys, "promote", "c-best", "--home", str(home))
    assert code == 2 and out == ""
    assert plan["outcome"].removeprefix("refused: ") in " ".join(err.split())  # ... the same refusal
    with Store.open(Home.resolve(home), create=False) as store:
        assert history(store) == []


def test_dry_run_follows_the_gates_decision(home: Path, capsys) -> None:
    plan = _plan(capsys, home, "c-half")
    assert (plan["gate"], plan["outcome"], plan["replacing"]) == ("pass", "promote", None)
    assert plan["decision"]["passed"] is True and plan["decision"]["champion"] is None
    code, _, err = run_cli(capsys, "promote", "c-half", "--home", str(home))
    assert code == 0, err

    assert _plan(capsys, home, "c-half")["outcome"] == "no change: already the channel's model"
    better = _plan(capsys, home, "c-best")
    assert (better["gate"], better["outcome"]) == ("pass", "replace c-half")
    assert better["decision"]["test"]["p_value"] < 0.05
    code, _, err = run_cli(capsys, "promote", "c-best", "--home", str(home))
    assert code == 0, err

    worse = _plan(capsys, home, "c-half")
    assert worse["gate"] == "refuse" and worse["outcome"].startswith("refused by the gate")
    forced = _plan(capsys, home, "c-half", "--force", "--reason", "field test")
    assert forced["outcome"] == "replace c-best (forced past the gate)"
    assert forced["decision"]["forced"] is True and forced["decision"]["forced_reason"] == "field test"
    assert forced["decision"]["gate_passed"] is False
    with Store.open(Home.resolve(home), create=False) as store:
        assert [r.candidate_id for r in history(store)] == ["c-best", "c-half"]  # dry runs changed nothing
