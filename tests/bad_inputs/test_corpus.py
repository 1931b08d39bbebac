"""The bad-input corpus: every row is something a user may type or write, and what it must do.

For each bad sweep config, dataset, command line and HTTP body the contract
is the same: exit 2 (a 4xx JSON answer for HTTP), exactly one line on
stderr naming the problem, no traceback, and the store byte-for-byte as it
was (every row and every file under the home). Commands run in-process
against one prepared home (``conftest.prepared``); only what needs a real
process (a closed pipe, another user) runs as one.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selection.runtime.http_checks import Case
from tests.bad_inputs.conftest import CANDIDATES
from tests.bad_inputs.contract import REPO, assert_user_error, run_cli, snapshot
from tests.shadow.conftest import separable_frame, write_dataset

CHAMPION, CHALLENGER = CANDIDATES


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tabular dataset (400 rows, 2 features, binary target) as a catalog entry."""
    return write_dataset(tmp_path_factory.mktemp("catalog"), separable_frame())


def sweep_toml(dataset: Path | str, extra: str = "", *, sweep: str = "", params: str = "") -> str:
    """A valid sweep file over ``dataset`` with lines added to [sweep], [model.params] and the end."""
    return (f'[sweep]\ndataset = "{dataset}"\n{sweep}\n[holdout]\nrows = 100\n'
            f'[[slices]]\nstrategy = "recent"\nrows = 100\n'
            f'[model]\nfamily = "mlp"\n[model.params]\nepochs = 1\n{params}\n{extra}\n')


def search(space: str, trials: str = "2") -> dict[str, str]:
    """sweep_toml changes that add a [search] table with one [search.space] line."""
    return {"extra": f"[search]\ntrials = {trials}\n[search.space]\n{space}"}


def hundred(kind: str) -> str:
    return "[" + ", ".join(str(i / 100 if kind == "float" else i) for i in range(1, 101)) + "]"


# -- sweep configs: (id, what to change, a fragment of the one line) ---------------------------

#: Each value: keyword arguments of sweep_toml, and what the error line must say.
CONFIGS: dict[str, tuple[dict[str, str], str]] = {
    "ranking-nan": ({"extra": "[ranking]\nmax_latency_ms = nan"}, "max_latency_ms must be a number >= 0"),
    "ranking-inf": ({"extra": "[ranking]\nmax_latency_ms = inf"}, "finite"),
    "ranking-neg-inf": ({"extra": "[ranking]\nmin_accuracy = -inf"}, "min_accuracy"),
    "ranking-int64": ({"extra": "[ranking]\nmax_size_bytes = 100000000000000000000"}, "below 2**63"),
    "ranking-bool": ({"extra": "[ranking]\nmax_latency_ms = true"}, "max_latency_ms"),
    "gate-guard-nan": ({"extra": "[gate]\nguards = { latency_ms = nan }"}, "finite percentage"),
    "gate-guard-inf": ({"extra": "[gate]\nguards = { latency_ms = inf }"}, "finite percentage"),
    "gate-alpha-nan": ({"extra": "[gate]\nalpha = nan"}, "alpha must be a number in (0, 1)"),
    "gate-improvement-inf": ({"extra": "[gate]\nmin_improvement = inf"}, "min_improvement"),
    "seed-1e20": ({"sweep": "seed = 100000000000000000000"}, "'seed' must be an int in the range [0, 4294967295]"),
    "seed-2**32": ({"sweep": "seed = 4294967296"}, "[0, 4294967295]"),
    "seed-negative": ({"sweep": "seed = -1"}, "'seed'"),
    "seed-float": ({"sweep": "seed = 1.5"}, "'seed'"),
    "seed-nan": ({"sweep": "seed = nan"}, "'seed'"),
    "max-in-flight-1e20": ({"sweep": "max_in_flight = 100000000000000000000"}, "'max_in_flight'"),
    "grid-1e8": ({"params": f"width = {hundred('int')}\nbatch_size = {hundred('int')}\n"
                            f"lr = {hundred('float')}\ndropout = {[i / 200 for i in range(100)]}"},
                 "the grid has 100000000 points (> 10000)"),
    "grid-empty-list": ({"params": "width = []"}, "empty list"),
    "param-nan": ({"params": "lr = nan"}, "'lr'"),
    "param-inf": ({"params": "lr = inf"}, "'lr'"),
    "param-int-huge": ({"params": "width = 100000000000000000000"}, "'width'"),
    "param-float-for-int": ({"params": "width = 1e20"}, "'width'"),
    "bootstrap-seed-1e20": ({"extra": '[[slices]]\nstrategy = "bootstrap"\nn = 2\nseed = 100000000000000000000'},
                            "'seed'"),
    "name-nul": ({"sweep": 'name = "a\\u0000b"'}, "NUL"),
    "device-nul": ({"sweep": 'devices = ["host-cpu\\u0000"]'}, "NUL"),
    "param-key-nul": ({"params": '"wid\\u0000th" = 3'}, "NUL"),
    "search-step-text": (search('width = { low = 4, high = 8, step = "a" }'),
                         "'step'"),
    "search-step-nan": (search('lr = { low = 0.001, high = 0.1, step = nan }'),
                        "'step'"),
    "search-log-text": (search('lr = { low = 0.001, high = 0.1, log = "yes" }'),
                        "'log'"),
    "search-log-step": (search('lr = { low = 0.001, high = 0.1, log = true, step = 0.01 }'),
                        "a log range needs"),
    "search-log-zero": (search('weight_decay = { low = 0.0, high = 0.5, log = true }'),
                        "a log range needs"),
    "search-trials-1e20": (search('width = { low = 4, high = 8 }', '100000000000000000000'),
                           "'trials'"),
    "not-toml": ({"extra": "[[["}, "is not valid TOML"),
    "unknown-section": ({"extra": "[rankng]\nmax_latency_ms = 1"}, "unknown key 'rankng'"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_sweep_config(case: str, prepared: Path, toy_manifest: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    changes, fragment = CONFIGS[case]
    config = tmp_path / "sweep.toml"
    config.write_text(sweep_toml(toy_manifest, **changes), encoding="utf-8")
    before = snapshot(prepared)
    result = run_cli(capsys, "sweep", "run", str(config), "--home", str(prepared), "--quiet")
    assert_user_error(result, fragment)
    assert snapshot(prepared) == before


def test_the_good_config_of_the_table_is_good(toy_manifest: Path) -> None:
    """The rows above fail by what they change, not by a broken base."""
    from shadow.sweep import load_config, prepare_sweep

    config = toy_manifest.parent / "sweep.toml"
    config.write_text(sweep_toml(toy_manifest))
    prepare_sweep(load_config(config))


# -- datasets: a dataset.toml and its CSV -------------------------------------------------------

def _frame(target: object, n: int = 400) -> pd.DataFrame:
    frame = separable_frame(n)
    frame["label"] = target
    return frame


RNG = np.random.default_rng(7)
DATASETS: dict[str, tuple[pd.DataFrame | str, str, str]] = {
    # id: (frame or raw CSV text, extra manifest lines, fragment)
    "continuous-target": (_frame(RNG.normal(size=400)), "", "holds non-integer numbers"),
    "target-as-ids": (_frame(np.arange(400)), "", "400 distinct values for 400 rows"),
    "target-inf": (_frame(np.where(np.arange(400) % 2, 1.0, np.inf)), "", "non-integer"),
    "target-single-class": (_frame(np.ones(400, dtype=int)), "", "a single value"),
    "target-missing-values": (_frame(np.where(np.arange(400) % 7, 1.0, np.nan)), "", "missing value"),
    "feature-inf": (separable_frame().assign(x0=np.inf), "", "infinite feature value"),
    "feature-text": (separable_frame().assign(x0="warm"), "", "not numeric"),
    "too-few-rows": (separable_frame(20), "", "at least 50 are needed"),
    "empty-csv": ("", "", "cannot parse"),
    "header-only": ("x0,x1,label\n", "", "rows"),
    "binary-garbage": ("\x00\xff\xfe" * 100, "", ""),
    "declared-rows-wrong": (separable_frame(), "rows = 999", "the manifest says rows = 999"),
    "declared-rows-1e20": (separable_frame(), "rows = 100000000000000000000", "rows"),
    "missing-target-column": (separable_frame().rename(columns={"label": "y"}), "", "column 'label' not in the table"),
}


@pytest.mark.parametrize("case", sorted(DATASETS))
def test_bad_dataset(case: str, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, extra, fragment = DATASETS[case]
    manifest = write_dataset(tmp_path / "catalog", separable_frame(), features=["x0", "x1"])
    csv = manifest.parent / "data.csv"
    if isinstance(data, str):
        csv.write_bytes(data.encode("utf-8", "surrogateescape"))
    else:
        data.to_csv(csv, index=False)
    if extra:
        text = manifest.read_text()
        manifest.write_text(text.replace("[source]", f"{extra}\n[source]"))
    config = tmp_path / "sweep.toml"
    config.write_text(sweep_toml(manifest))
    before = snapshot(prepared)
    result = run_cli(capsys, "sweep", "run", str(config), "--home", str(prepared), "--quiet")
    assert_user_error(result, fragment)
    assert snapshot(prepared) == before


# -- command lines ------------------------------------------------------------------------------

DEEP = "(" * 500 + "accuracy > 0" + ")" * 500
NOTS = "not " * 1000 + "accuracy > 0"
MANY = " and ".join(["accuracy > 0"] * 500)
HUGE = "9" * 30

#: id: (argv with {home}/{dir}/{file}/{missing} placeholders, fragment of the error line)
ARGS: dict[str, tuple[tuple[str, ...], str]] = {
    "top-past-int64": (("leaderboard", "--top", HUGE), "--top"),
    "top-zero": (("leaderboard", "--top", "0"), "must be an int >= 1"),
    "top-negative": (("leaderboard", "--top", "-5"), "--top"),
    "top-text": (("leaderboard", "--top", "ten"), "--top"),
    "top-float": (("leaderboard", "--top", "1.5"), "--top"),
    "top-5000-digits": (("leaderboard", "--top", "9" * 5000), "--top"),
    "report-top-past-int64": (("report", "--top", HUGE, "--out", "{dir}/r.html"), "--top"),
    "serve-port-past-range": (("serve", "--port", "70000"), "--port"),
    "serve-port-past-int64": (("serve", "--port", HUGE), "--port"),
    "serve-threads-zero": (("serve", "--threads", "0"), "--threads"),
    "serve-max-connections-huge": (("serve", "--max-connections", HUGE), "--max-connections"),
    "serve-poll-nan": (("serve", "--poll-ms", "nan"), "--poll-ms"),
    "where-500-parens": (("leaderboard", "--where", DEEP), "nest at most 32 deep"),
    "where-1000-nots": (("leaderboard", "--where", NOTS), "nest at most 32 deep"),
    "where-500-terms": (("leaderboard", "--where", MANY), "at most 256 comparisons"),
    "where-terms-over-flags": (("leaderboard", *(["--where", " and ".join(["accuracy > 0"] * 100)] * 3)),
                               "at most 256 comparisons"),
    "where-1e999": (("leaderboard", "--where", "accuracy > 1e999"), "must be finite"),
    "where-long": (("leaderboard", "--where", "accuracy > 0 " + " " * 20_000), "at most 10000 characters"),
    "where-nul-in-text": (("leaderboard", "--where", "family == 'ml\x00p'"), "NUL"),
    "where-nul-bare": (("leaderboard", "--where", "accuracy\x00 > 0"), "cannot read"),
    "where-unclosed": (("leaderboard", "--where", "(accuracy > 0"), "expected ')'"),
    "where-unknown-column": (("leaderboard", "--where", "acuracy > 0"), "unknown column 'acuracy'"),
    "where-type": (("leaderboard", "--where", "accuracy > 'high'"), "holds number values"),
    "sweep-nul": (("leaderboard", "--sweep", "s-\x00"), "NUL"),
    "device-nul": (("leaderboard", "--device", "host\x00"), "--device"),
    "candidate-nul": (("promote", "c-\x00", "--force", "--reason", "r"), "NUL"),
    "candidate-unknown": (("promote", "c-000000000000", "--force", "--reason", "r"), "c-000000000000"),
    "reason-nul": (("promote", CHALLENGER, "--force", "--reason", "because\x00"), "NUL"),
    "best-sweep-nul": (("promote", "--best", "--sweep", "s\x00"), "NUL"),
    "channel-nul": (("promote", CHALLENGER, "--force", "--reason", "r", "--channel", "can\x00ary"), "channel name"),
    "history-channel-nul": (("history", "--channel", "prod\x00"), "channel name"),
    "rollback-first": (("rollback",), "nothing earlier to roll back to"),
    "out-is-directory": (("leaderboard", "--format", "csv", "--out", "{dir}"), "is a directory"),
    "out-missing-folder": (("leaderboard", "--format", "csv", "--out", "{missing}/b.csv"), "does not exist"),
    "out-under-a-file": (("leaderboard", "--format", "csv", "--out", "{file}/b.csv"), "is not a folder"),
    "parquet-out-is-directory": (("leaderboard", "--format", "parquet", "--out", "{dir}"), "is a directory"),
    "report-out-is-directory": (("report", "--out", "{dir}"), "is a directory"),
    "report-out-missing-folder": (("report", "--out", "{missing}/r.html"), "does not exist"),
    "home-is-a-file/leaderboard": (("leaderboard", "--home", "{file}"), "is a file"),
    "home-is-a-file/history": (("history", "--home", "{file}"), "is a file"),
    "home-is-a-file/promote": (("promote", CHALLENGER, "--home", "{file}"), "is a file"),
    "home-is-a-file/doctor": (("doctor", "--home", "{file}"), "is a file"),
    "home-missing": (("leaderboard", "--home", "{missing}"), "no shadow store"),
    "store-url-nonsense": (("leaderboard", "--store", "::nonsense::"), "database URL"),
    "store-not-a-database": (("leaderboard", "--store", "sqlite:///{file}"), "file is not a database"),
    "unknown-verb": (("promot",), "invalid choice"),
    "unknown-flag": (("leaderboard", "--tpo", "3"), "unrecognized arguments"),
}


@pytest.mark.parametrize("case", sorted(ARGS))
def test_bad_arguments(case: str, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, fragment = ARGS[case]
    (tmp_path / "notes.txt").write_text("not a home")
    places = {"home": str(prepared), "dir": str(tmp_path), "file": str(tmp_path / "notes.txt"),
              "missing": str(tmp_path / "no" / "such")}
    words = [a.format(**places) if "{" in a and "}" in a and "'" not in a else a for a in argv]
    if "--home" not in words and "--store" not in words and words[0] in (
            "leaderboard", "report", "promote", "rollback", "history", "serve", "doctor"):
        words += ["--home", str(prepared)]
    before = snapshot(prepared)
    result = run_cli(capsys, *words)
    assert_user_error(result, fragment)
    assert snapshot(prepared) == before
    assert (tmp_path / "notes.txt").read_text() == "not a home"
    assert not (tmp_path / "no").exists()


def test_every_int_flag_is_range_checked() -> None:
    """No verb takes a bare ``type=int``: each int flag goes through ``common.int_arg``."""
    import argparse

    from shadow.cli.main import ALL_VERBS, build_parser

    def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from ((f"{name} {n}", a) for n, a in walk(sub))
            else:
                yield parser.prog, action

    bare = [f"{prog} {a.option_strings}" for prog, a in walk(build_parser(ALL_VERBS)) if a.type is int]
    assert bare == []


# -- promote preconditions: checked before the transaction ---------------------------------------

@pytest.mark.parametrize("obstacle", ["channel-is-a-folder", "channel-is-a-file", "versions-is-a-file"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_promote_refuses_before_it_commits(obstacle: str, dry_run: bool, home_copy: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    channels = home_copy / "channels"
    if obstacle == "channel-is-a-folder":
        (channels / "canary").mkdir()
        (channels / "canary" / "model.onnx").write_bytes(b"someone's own file")
    elif obstacle == "channel-is-a-file":
        (channels / "canary").write_text("hello")
    else:
        shutil.rmtree(channels / ".versions")
        (channels / ".versions").write_text("hello")
    before = snapshot(home_copy)
    argv = ["promote", CHALLENGER, "--force", "--reason", "r", "--channel", "canary", "--home", str(home_copy)]
    result = run_cli(capsys, *argv, *(["--dry-run"] if dry_run else []))
    if dry_run:
        assert result.code == 0, result.stderr  # a dry run reports the refusal as its outcome
        assert "must be" in result.stdout + result.stderr
    else:
        assert_user_error(result, "nothing was changed")
    assert snapshot(home_copy) == before
    history = run_cli(capsys, "history", "--home", str(home_copy), "--format", "json")
    assert history.stdout.count('"action"') == 1  # only the fixture's first promotion


def _read_only(paths: list[Path], writable: bool = False) -> None:
    for path in paths:
        if not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IWUSR if writable
                       else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _unprivileged(*argv: str) -> subprocess.CompletedProcess[str]:
    """``shadow ARGV`` as a process file modes apply to.

    Root ignores modes; in a user namespace of its own (``unshare --user``) it
    keeps its files but loses that privilege, as any other user would.
    """
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    if prefix and shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: a read-only home cannot be made")
    return subprocess.run([*prefix, sys.executable, "-m", "shadow", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SHADOW_STORE": ""})


@pytest.mark.parametrize("what", ["channels", "whole-home"])
def test_a_read_only_home_is_one_line_and_changes_nothing(what: str, home_copy: Path) -> None:
    """Channels read-only (a database elsewhere still writable): promote refuses before its
    commit; the whole home read-only: the store refuses, in one line naming it."""
    paths = ([home_copy / "channels", *(home_copy / "channels").rglob("*")] if what == "channels"
             else [home_copy, *home_copy.rglob("*")])
    _read_only(paths)
    before = snapshot(home_copy)
    try:
        cases = [(("promote", CHALLENGER, "--force", "--reason", "r"),
                  "not writable" if what == "channels" else "readonly database"),
                 (("rollback",), "not writable" if what == "channels" else str(home_copy))]
        for argv, fragment in cases:
            result = _unprivileged(*argv, "--home", str(home_copy))
            assert_user_error(result, fragment)
            assert snapshot(home_copy) == before
    finally:
        _read_only(paths, writable=True)


# -- pipes: a reader that stops early -------------------------------------------------------------

def test_output_into_a_closed_pipe_ends_quietly(prepared: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "shadow", "history", "--home", str(prepared), "--format", "json"],
            cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
            env={**os.environ, "SHADOW_STORE": ""},
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 141


def test_head_reads_the_first_line_only(prepared: Path) -> None:
    result = subprocess.run(
        f"{sys.executable} -m shadow history --home {prepared} --format csv | head -n 1",
        shell=True, cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(result.stdout.splitlines()) == 1


# -- HTTP bodies: shadow serve's table of malformed requests --------------------------------------

@pytest.fixture(scope="module")
def server(prepared: Path) -> Iterator[tuple[str, int]]:
    from selection.runtime import ChannelRuntime
    from selection.runtime.server import ServerLimits, make_server

    runtime = ChannelRuntime(prepared / "channels", reload=False)
    runtime.start()
    srv = make_server(runtime, "127.0.0.1", 0, log=None,
                      limits=ServerLimits(idle_timeout_s=2.0, request_timeout_s=2.0))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    yield str(host), int(port)
    srv.shutdown()
    srv.server_close()
    runtime.stop()


def _http_cases() -> list[Case]:
    from selection.runtime.http_checks import cases
    from selection.testing import FEATURES

    return cases(len(FEATURES), FEATURES)


@pytest.mark.parametrize("case", _http_cases(), ids=lambda c: c.name)
def test_bad_http_request(case: Case, server: tuple[str, int], prepared: Path) -> None:
    from selection.runtime.http_checks import check_case

    before = snapshot(prepared)
    problem = check_case(*server, case)
    assert problem is None, problem
    assert snapshot(prepared) == before
