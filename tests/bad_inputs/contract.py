"""The bad-input contract, as assertions: exit 2, one line on stderr, no traceback, nothing changed.

Shared by the bad-input corpus (``tests/bad_inputs``) and the CLI error tests
(``tests/shadow/cli/test_cli_errors.py``). A command is run in-process
(:func:`run_cli`, fast: no interpreter start) or as a real process
(:func:`shadow`, for what only a process shows: exit codes from the OS, pipes).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    """What a command did: its exit code and what it wrote."""

    code: int
    stdout: str
    stderr: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    """``shadow ARGV`` in this process; argparse's own exits become the exit code."""
    from shadow.cli.main import main

    capsys.readouterr()  # drop what earlier steps printed
    try:
        code = main(list(argv))
    except SystemExit as exc:  # --help, usage errors: argparse exits
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def shadow(*argv: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m shadow ARGV`` as a real process (text output, 120 s limit)."""
    return subprocess.run(
        [sys.executable, "-m", "shadow", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})}, **kwargs,
    )


def snapshot(home: Path) -> tuple[list[str], dict[str, str]]:
    """Every row of every table, and the hash of every file under the home.

    The SQLite file's own bytes are left out (a reader may checkpoint its
    write-ahead log into it without changing a row); its rows are compared.
    """
    dump: list[str] = []
    if (home / "shadow.db").is_file():
        with sqlite3.connect(home / "shadow.db") as db:
            dump = list(db.iterdump())
        db.close()
    files = {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*")) if p.is_file() and not p.name.startswith("shadow.db")
    }
    links = {str(p.relative_to(home)): os.readlink(p) for p in sorted(home.rglob("*")) if p.is_symlink()}
    return dump, {**files, **{f"{k} ->": v for k, v in links.items()}}


def one_line_problem(code: int, stderr: str, fragments: Sequence[str] = ()) -> str | None:
    """What breaks the contract (exit 2, one stderr line, no traceback, fragments present), or None."""
    lines = stderr.strip().splitlines()
    if code != 2:
        return f"exit {code}, not 2; stderr: {stderr[-2000:]}"
    if "Traceback" in stderr:
        return f"a traceback: {stderr[-2000:]}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr, not 1: {stderr[-2000:]}"
    missing = [f for f in fragments if f not in lines[0]]
    if missing:
        return f"{missing} not in {lines[0]!r}"
    return None


def assert_user_error(result: subprocess.CompletedProcess[str] | Outcome, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr holding every fragment, no traceback."""
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.code
    problem = one_line_problem(code, result.stderr, fragments)
    assert problem is None, problem
