"""The public names of ``selection`` resolve to what they name, whatever was imported first."""

from __future__ import annotations

import subprocess
import sys


def test_leaderboard_is_the_function_even_after_its_subpackage_was_imported() -> None:
    # A fresh interpreter: the subpackage is imported before the public name is asked for,
    # which is the order the CLI and the gate import them in.
    code = (
        "from selection.leaderboard import frame as frame_module\n"
        "import selection\n"
        "from selection import best_candidate, leaderboard\n"
        "assert callable(leaderboard) and leaderboard is frame_module.leaderboard, leaderboard\n"
        "assert selection.leaderboard is leaderboard\n"
        "assert best_candidate is frame_module.best_candidate\n"
        "from selection.leaderboard import frame, sql\n"
        "assert frame is frame_module and sql.__name__ == 'selection.leaderboard.sql'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
