"""The CLI starts light: what each verb imports, the verb table, missing extras, the version.

Nothing here is timed (benchmarks/cli_startup.py measures start-up side by side
with numpy). These tests look at ``sys.modules`` of a real ``shadow`` process:
a heavy import that sneaks back into a parser or a package ``__init__`` fails
them on any machine, fast or slow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import selection
from selection import Store, promote
from selection.testing import FEATURES, add_tiny_candidates
from shadow import __version__
from shadow.cli.main import ALL_VERBS, COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[3]
TRAINING = ("torch", "ray", "optuna")
STORE = ("pandas", "sqlalchemy")

#: Runs ``shadow ARGS...`` in this process and writes the top-level modules it
#: loaded to $SHADOW_TEST_MODULES at exit. $SHADOW_TEST_BLOCK (comma separated)
#: makes those packages unimportable, as on an install without their extra.
RUNNER = r"""
import atexit, json, os, sys

blocked = {b for b in os.environ.get("SHADOW_TEST_BLOCK", "").split(",") if b}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())


def dump():
    with open(os.environ["SHADOW_TEST_MODULES"], "w") as out:
        json.dump(sorted({m.partition(".")[0] for m in sys.modules}), out)


atexit.register(dump)
from shadow.cli.main import main

sys.exit(main(sys.argv[1:]))
"""


def run_shadow(tmp_path: Path, *args: str, block: tuple[str, ...] = (),
               ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``shadow ARGS`` in a fresh interpreter: its result and the top-level modules it imported."""
    modules = tmp_path / "modules.json"
    env = {**os.environ, "SHADOW_STORE": "", "SHADOW_TEST_MODULES": str(modules),
           "SHADOW_TEST_BLOCK": ",".join(block)}
    result = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, set(json.loads(modules.read_text()))


@pytest.fixture
def empty_home(tmp_path: Path) -> Path:
    """A home with a real, empty SQLite store."""
    home = tmp_path / "home"
    Store.open(home, create=True).close()
    return home


def test_help_loads_neither_the_store_nor_the_training_stack(tmp_path: Path) -> None:
    result, loaded = run_shadow(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "history" in result.stdout and "serve" in result.stdout
    assert loaded.isdisjoint(TRAINING + STORE + ("numpy", "onnxruntime")), loaded


@pytest.mark.parametrize("verb", sorted({c.name for c in COMMANDS} | {"sweep list", "sweep run"}))
def test_every_verb_help_loads_neither_the_store_nor_the_training_stack(
    tmp_path: Path, verb: str
) -> None:
    result, loaded = run_shadow(tmp_path, *verb.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: shadow {verb}")
    assert loaded.isdisjoint(TRAINING + STORE), loaded


@pytest.mark.parametrize("verb", ["history", "sweep list", "leaderboard"])
def test_verbs_that_read_the_store_load_no_training_stack(
    tmp_path: Path, empty_home: Path, verb: str
) -> None:
    result, loaded = run_shadow(tmp_path, *verb.split(), "--home", str(empty_home))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "(no rows)\n"
    assert loaded.isdisjoint(TRAINING), loaded
    assert "sqlalchemy" in loaded  # it did read the store


def test_import_selection_runtime_loads_no_store(tmp_path: Path) -> None:
    code = ("import sys, selection.runtime, selection.runtime.server; "
            "print(sorted({m.partition('.')[0] for m in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    loaded = set(eval(result.stdout))  # a list literal printed by the child
    assert loaded.isdisjoint(TRAINING + STORE + ("onnx",)), loaded


def test_every_public_name_of_selection_resolves() -> None:
    assert set(selection.__all__) == set(selection._EXPORTS)
    for name in selection.__all__:
        assert getattr(selection, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from selection import *", namespace)
    assert set(selection.__all__) <= set(namespace)
    assert selection.Store is Store and selection.LEADERBOARD_COLUMNS
    with pytest.raises(AttributeError, match="no attribute 'Stroe'"):
        selection.Stroe  # noqa: B018


def _verb_action(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_the_verb_table_matches_what_each_module_registers() -> None:
    verbs = _verb_action(build_parser(ALL_VERBS))
    helps = {a.dest: a.help for a in verbs._choices_actions}
    # Each module registers exactly its rows of COMMANDS, in that order, with the same help line.
    assert list(verbs.choices) == [c.name for c in COMMANDS]
    assert helps == {c.name: c.help for c in COMMANDS}
    # The light parser (the one `shadow --help` builds) lists the same verbs and lines.
    light_verbs = _verb_action(build_parser())
    assert {a.dest: a.help for a in light_verbs._choices_actions} == helps


def test_one_verb_builds_only_its_module() -> None:
    verbs = _verb_action(build_parser("history"))
    # Another module's verb is a one-line entry; history's module registers all of its verbs.
    assert verbs.choices["serve"].format_usage().strip() == "usage: shadow serve [-h]"
    assert "--channel" in verbs.choices["history"].format_help()
    assert "--channel" in verbs.choices["rollback"].format_help()


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, empty_home: Path) -> None:
    result, loaded = run_shadow(tmp_path, "history", "--home", str(empty_home),
                                block=("sqlalchemy", "pandas"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("shadow history: error: this needs the optional dependencies "
                                    "of the 'store' extra")
    assert "pip install 'shadow-sweep[store]'" in result.stderr
    assert "sqlalchemy" not in loaded


def test_no_store_here_is_said_before_a_missing_extra(tmp_path: Path, empty_home: Path) -> None:
    """``shadow serve`` on a device with channel files only must not ask for the store extra."""
    code = RUNNER.split("def dump")[0] + (
        "import argparse\n"
        "from selection.errors import NotFoundError\n"
        "from shadow.cli.common import MissingExtraError, open_store\n"
        "for home in sys.argv[1:]:\n"
        "    try:\n"
        "        open_store(argparse.Namespace(home=home, store=None))\n"
        "    except (NotFoundError, MissingExtraError) as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    env = {**os.environ, "SHADOW_STORE": "", "SHADOW_TEST_BLOCK": "sqlalchemy,pandas"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nothing"), str(empty_home)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["NotFoundError", "MissingExtraError"], result.stderr


def test_store_env_name_matches_the_store() -> None:
    from selection.store import STORE_ENV
    from shadow.cli import common

    assert common.STORE_ENV == STORE_ENV


def test_a_missing_training_extra_names_train(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text("[sweep]\n")
    result, _ = run_shadow(tmp_path, "sweep", "run", str(config), block=TRAINING)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'train' extra" in result.stderr and "shadow-sweep[train]" in result.stderr


def test_serve_answers_without_the_store_installed(tmp_path: Path, empty_home: Path) -> None:
    """An edge install has the channel files and the runtime only: serve them."""
    with Store.open(empty_home) as store:
        add_tiny_candidates(store, ["c-a"])
        promote(store, "c-a")
    modules = tmp_path / "modules.json"
    env = {**os.environ, "SHADOW_STORE": "", "SHADOW_TEST_MODULES": str(modules),
           "SHADOW_TEST_BLOCK": ",".join(TRAINING + STORE)}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "serve", "--home", str(empty_home), "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        # A note may come first (e.g. that the store cannot be opened here).
        lines: list[str] = []
        while len(lines) < 5 and " on http://127.0.0.1:" not in (lines or [""])[-1]:
            lines.append(proc.stderr.readline())
        line = lines[-1]
        assert " on http://127.0.0.1:" in line, lines
        host, port = line.rsplit(" on http://", 1)[1].split(";")[0].strip().rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/predict", body=json.dumps({"rows": [[0.5] * len(FEATURES)]}))
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 200, answer
        assert answer["candidate_id"] == "c-a" and len(answer["predictions"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert set(json.loads(modules.read_text())).isdisjoint(TRAINING + STORE)


def test_version_has_one_source(tmp_path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shadow.__version__"}
    result, _ = run_shadow(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"shadow-sweep {__version__}\n"
