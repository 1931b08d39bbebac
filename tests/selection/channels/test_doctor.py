"""``shadow doctor``: finds every way the channel files can drift from the database, repairs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from selection import Store, history, promote, rollback
from selection.atomic import replace_symlink_atomic
from selection.channels.doctor import Finding, diagnose, repair
from selection.store import schema

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def two(store: Store, make) -> Store:
    make.sweep()
    make.candidate("c-1")
    make.candidate("c-2")
    promote(store, "c-1")
    promote(store, "c-2")
    return store


def _status(findings: list[Finding]) -> dict[str, str]:
    return {f.check: f.status for f in findings if f.status != "fixed"}


def _bad(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status in ("warn", "fail")]


def test_healthy_store(two: Store) -> None:
    findings = diagnose(two)
    assert _bad(findings) == []
    assert {"store", "channel production files", "channel production history", "artifacts",
            "leftovers"} <= set(_status(findings))


def test_link_left_behind_by_a_crash_is_found_and_repaired(two: Store) -> None:
    rows = history(two)
    old = f".versions/production-{rows[1].history_id}-{rows[1].sha256[:12]}"
    replace_symlink_atomic(two.home.channel_dir("production"), old)  # as if killed before the swap
    [finding] = _bad(diagnose(two))
    assert finding.check == "channel production files" and finding.status == "fail"
    assert "interrupted change left the files behind" in finding.detail
    assert "--repair" in (finding.fix or "")
    done = repair(two)
    assert [f.check for f in done if f.status == "fixed"] == ["channel production files"]
    assert _bad(done) == [] and history(two) == rows
    assert json.loads((two.home.channel_dir("production") / "manifest.json").read_text())[
        "candidate_id"] == "c-2"


@pytest.mark.parametrize("damage", ["model", "manifest", "link"])
def test_damaged_channel_files_are_repaired(two: Store, damage: str) -> None:
    version = two.home.channel_dir("production").resolve()
    if damage == "model":
        (version / "model.onnx").write_bytes(b"x")
    elif damage == "manifest":
        (version / "manifest.json").write_text("{}")
    else:
        os.unlink(two.home.channel_dir("production"))
    assert _status(diagnose(two))["channel production files"] == "fail"
    assert _bad(repair(two)) == []


def test_leftovers_are_reported_and_removed(two: Store) -> None:
    versions = two.home.channels_dir / ".versions"
    (versions / ".tmp-production-9-0123456789ab-x1y2").mkdir()
    (versions / ".tmp-production-9-0123456789ab-x1y2" / "model.onnx").write_bytes(b"half")
    os.symlink(".versions/nowhere", two.home.channels_dir / ".production.0011223344556677.tmp")
    assert _status(diagnose(two))["leftovers"] == "warn"
    done = repair(two)
    assert any(f.check == "leftovers" and f.status == "fixed" for f in done)
    assert _bad(done) == []
    assert sorted(p.name for p in versions.iterdir()) == sorted(
        p.name for p in versions.iterdir() if not p.name.startswith("."))


def test_tampered_artifact_cannot_be_repaired_and_says_so(two: Store) -> None:
    sha = history(two)[0].sha256
    two.artifacts.path(sha).write_bytes(b"evil")
    (two.home.channel_dir("production").resolve() / "model.onnx").write_bytes(b"evil")
    done = repair(two)
    assert any(f.status == "fail" and "could not repair" in f.detail for f in done)
    final = _status(done)
    assert final["artifacts"] == "fail" and final["channel production files"] == "fail"


def test_edited_history_is_reported(two: Store) -> None:
    with two.transaction() as conn:
        conn.execute(update(schema.promotions).where(schema.promotions.c.history_id == 2)
                     .values(previous_candidate_id="c-9"))
    finding = next(f for f in diagnose(two) if f.check == "channel production history")
    assert finding.status == "fail" and "row 2 says it replaced c-9" in finding.detail


def test_stray_channel_directory_is_a_warning(two: Store) -> None:
    (two.home.channels_dir / "handmade").mkdir()
    assert _status(diagnose(two))["channel handmade files"] == "warn"


def test_rollback_history_chain_is_healthy(two: Store) -> None:
    rollback(two)
    assert _bad(diagnose(two)) == []


def test_cli_reports_then_repairs(two: Store) -> None:
    os.unlink(two.home.channel_dir("production"))
    env = {**os.environ, "SHADOW_STORE": ""}

    def doctor(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shadow", "doctor", "--home",
                               str(two.home.root), *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    found = doctor()
    assert found.returncode == 1
    assert "fail" in found.stdout and "1 problem(s) found" in found.stderr
    fixed = doctor("--repair", "--format", "json")
    assert fixed.returncode == 0, fixed.stderr
    rows = json.loads(fixed.stdout)
    assert rows[0] == {"check": "channel production files", "status": "fixed",
                       "detail": "rewrote the channel's files from the database", "fix": None}
    assert not [r for r in rows if r["status"] == "fail"]
