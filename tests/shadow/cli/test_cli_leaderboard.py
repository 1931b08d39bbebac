"""`shadow leaderboard` filters and formats, and `shadow promote` through the gate, on a real sweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from selection.channels.promotion import history
from selection.gate.record import GateDecision
from selection.store import Store
from shadow.cli.main import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(swept, tmp_path: Path) -> Path:
    """A private copy of the shared sweep's home: promotions here touch nobody else."""
    source, _ = swept
    copy = tmp_path / "home"
    shutil.copytree(source, copy, symlinks=True)
    return copy


def test_where_top_and_formats(swept, capsys, tmp_path: Path) -> None:
    home, _ = swept
    code, out, err = run_cli(capsys, "leaderboard", "--home", str(home), "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert {"eligible", "ineligible_reason", "rank", "policy"} <= set(rows[0])
    cut = sorted(r["accuracy"] for r in rows)[len(rows) // 2]
    code, out, err = run_cli(capsys, "leaderboard", "--home", str(home), "--format", "json",
                             "--where", f"accuracy >= {cut}", "--where", "status == 'ok'")
    assert code == 0, err
    kept = json.loads(out)
    assert kept and all(r["accuracy"] >= cut for r in kept)
    assert {r["rank"] for r in kept} <= {r["rank"] for r in rows}  # ranks do not move
    code, out, err = run_cli(capsys, "leaderboard", "--home", str(home), "--top", "1",
                             "--device", "host-cpu", "--format", "csv")
    assert code == 0 and len(pd.read_csv(pd.io.common.StringIO(out))) == 1
    target = tmp_path / "board.parquet"
    code, _, err = run_cli(capsys, "leaderboard", "--home", str(home), "--format", "parquet",
                           "--out", str(target), "--pareto")
    assert code == 0, err
    front = pd.read_parquet(target)
    assert len(front) >= 1 and front["eligible"].all()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--where", "speed < 2"], "unknown column 'speed'; known columns: rank, eligible"),
        (["--where", "accuracy >"], "expected a value"),
        (["--format", "parquet"], "--format parquet writes a file: add --out"),
        (["--sort", "nope"], "--sort must name leaderboard columns"),
    ],
)
def test_bad_leaderboard_input_is_one_line(swept, capsys, args: list[str], fragment: str) -> None:
    home, _ = swept
    code, out, err = run_cli(capsys, "leaderboard", "--home", str(home), *args)
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_promote_through_the_gate(home: Path, capsys) -> None:
    base = ["--home", str(home)]
    code, out, err = run_cli(capsys, "promote", "--best", "--dry-run", "--format", "json", *base)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["dry_run"] and plan["gate"] == "pass" and plan["decision"]["champion"] is None
    assert not (home / "channels" / "production").exists()  # dry run changed nothing

    code, out, err = run_cli(capsys, "promote", "--best", "--format", "json", *base)
    assert code == 0, err
    best = json.loads(out)["candidate_id"]
    code, out, err = run_cli(capsys, "leaderboard", "--format", "json", "--device", "host-cpu", *base)
    worst = max((r for r in json.loads(out) if r["rank"] is not None), key=lambda r: r["rank"])

    code, out, err = run_cli(capsys, "promote", worst["candidate_id"], "--dry-run", *base)
    assert code == 0 and "refused by the gate" in out and "[FAIL] improvement" in out

    with Store.open(home, create=False) as store:
        before = len(history(store))
    code, out, err = run_cli(capsys, "promote", worst["candidate_id"], *base)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "gate refused" in err and "--force --reason TEXT" in err
    code, out, err = run_cli(capsys, "promote", worst["candidate_id"], "--force", *base)
    assert code == 2 and "--force needs --reason" in err
    with Store.open(home, create=False) as store:
        assert len(history(store)) == before  # refusals stored nothing

    code, out, err = run_cli(capsys, "promote", worst["candidate_id"], "--force", "--reason",
                             "keep the small model for the field test", *base)
    assert code == 0, err
    with Store.open(home, create=False) as store:
        newest, previous = history(store)[:2]
    forced = GateDecision.from_json(newest.decision)
    assert forced.forced is True and forced.passed is False
    assert newest.reason == "keep the small model for the field test"
    assert previous.candidate_id == best and GateDecision.from_json(previous.decision).passed is True
