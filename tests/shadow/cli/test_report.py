"""`shadow report` writes a self-contained page that headless Chromium really renders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from selection.channels.promotion import current
from selection.store import Store
from shadow.cli.main import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _render(page: Path, tmp_path: Path) -> str:
    """The DOM Chromium builds from the file (offline, no network)."""
    # Not a skip: a report nobody can render is a failure (`make system-deps` installs it).
    assert Path(CHROMIUM).exists(), "Chromium is not installed: run `make system-deps`"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_renders_leaderboard_plot_and_champion(swept, tmp_path: Path, capsys) -> None:
    source, _ = swept
    home = tmp_path / "home"
    shutil.copytree(source, home, symlinks=True)
    with Store.open(home, create=False) as store:
        already = current(store, "production")  # another test may have promoted in the shared home
    if already is None:
        assert main(["promote", "--best", "--home", str(home), "--format", "json"]) == 0
        champion = json.loads(capsys.readouterr().out)["candidate_id"]
    else:
        champion = already.candidate_id
    assert main(["leaderboard", "--home", str(home), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)

    page = tmp_path / "report.html"
    assert main(["report", "--home", str(home), "--out", str(page)]) == 0
    text = page.read_text()
    # Self-contained: nothing for a browser to fetch (XML namespace URIs are names, not fetches).
    for fetch in ("<script", "<link", "<img", 'src="http', 'href="http', "url(http", "@import"):
        assert fetch not in text
    dom = _render(page, tmp_path)
    assert "<svg" in dom and "accuracy vs latency" in dom
    assert f'class="champion" data-candidate="{champion}"' in dom
    for row in rows:
        if row["rank"] is not None:
            assert f'data-candidate="{row["candidate_id"]}"' in dom


def test_report_needs_an_existing_directory(swept, tmp_path: Path, capsys) -> None:
    home, _ = swept
    code = main(["report", "--home", str(home), "--out", str(tmp_path / "no" / "r.html")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
