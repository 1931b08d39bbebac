"""``shadow``: the command line.

Every verb is listed in :data:`COMMANDS` with the module that implements it
(``add_parsers`` and a handler per verb). ``shadow --help`` is built from the
list alone, and ``shadow VERB ...`` imports only that verb's module, whose
top level is kept light: what a verb needs (pandas, SQLAlchemy, torch, Ray)
it imports when it runs. So starting the CLI costs about as much as
importing numpy, and a slim install (no store, no training stack) can still
run ``shadow serve``.

This module also owns the error contract: a user error (any ShadowError, a
bad flag, a verb whose optional dependencies are not installed, a file or
folder the OS refuses: a read-only home, a full disk) is one line on stderr
and exit code 2; Ctrl-C is exit 130; output piped into a reader that stops
early (``| head``) ends quietly, as Unix tools do; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from selection.errors import ShadowError
from shadow.cli.common import missing_extra_message

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
#: What a shell reports for a tool killed by SIGPIPE (128 + 13): the reader went away.
EXIT_BROKEN_PIPE = 141

DESCRIPTION = """\
Train shadow models on slices of your data in parallel (Ray), convert and
benchmark each for edge devices, rank them, and promote a challenger that
beats the production model - atomically, with one-command rollback.

typical session:
  shadow datasets                                 # what data is in the catalog
  shadow sweep run datasets/noaa-weather/sweep.toml
  shadow leaderboard --top 5                      # best candidates of the latest sweep
  shadow promote --best                           # put rank 1 into production
  shadow history                                  # who promoted what, when
  shadow rollback                                 # undo the last promotion

state lives in $SHADOW_HOME (default ./.shadow): shadow.db, artifacts/, channels/.
The production model an edge app loads: $SHADOW_HOME/channels/production/model.onnx
"""


@dataclass(frozen=True)
class Command:
    """One verb: its name, the module that builds its parser, its line in ``shadow --help``."""

    name: str
    module: str
    help: str


#: Every verb, in the order ``shadow --help`` lists them. Adding a verb is a
#: module with ``add_parsers(verbs)`` plus a row here (a test checks that each
#: module registers exactly its rows, with the same help line).
COMMANDS: tuple[Command, ...] = (
    Command("sweep", "shadow.cli.cmd_sweep", "run shadow sweeps"),
    Command("leaderboard", "shadow.cli.cmd_leaderboard", "list candidates, ranked"),
    Command("report", "shadow.cli.cmd_report", "write an HTML report (leaderboard + Pareto plots)"),
    Command("promote", "shadow.cli.cmd_promote", "put a candidate into a channel (production by default)"),
    Command("rollback", "shadow.cli.cmd_promote", "undo the channel's last promotion"),
    Command("history", "shadow.cli.cmd_promote", "list promotions and rollbacks, newest first"),
    Command("events", "shadow.cli.cmd_events",
            "list what the controller did and why: triggers, sweeps, decisions, promotions"),
    Command("watch", "shadow.cli.cmd_watch",
            "watch a channel: when a trigger fires, sweep, gate and promote (or propose)"),
    Command("backtest", "shadow.cli.cmd_backtest",
            "run the loop's controller over a dataset's history and compare it with simpler rules"),
    Command("approve", "shadow.cli.cmd_approve",
            "approve a pending proposal: promote its candidate (mode = propose)"),
    Command("reject", "shadow.cli.cmd_approve", "reject a pending proposal; no channel changes"),
    Command("feedback", "shadow.cli.cmd_feedback",
            "store labels that came back (CSV/JSONL) or merge a device's prediction log"),
    Command("serve", "shadow.cli.cmd_serve",
            "serve a channel's model over HTTP, hot-swapping it on promotion"),
    Command("fleet", "shadow.cli.cmd_fleet",
            "publish a channel to devices over the air, and list which device runs what"),
    Command("datasets", "shadow.cli.cmd_catalog", "list the dataset catalog"),
    Command("devices", "shadow.cli.cmd_catalog", "list the devices candidates are evaluated on"),
    Command("data", "shadow.cli.cmd_data",
            "grow a catalog dataset with new labelled rows, and list its versions"),
    Command("doctor", "shadow.cli.cmd_doctor",
            "check store, channels and artifacts; --repair fixes channel files"),
    Command("mlflow", "shadow.cli.cmd_mlflow",
            "log a sweep's missing candidates to MLflow, or move a channel's champion alias"),
    Command("keys", "shadow.cli.cmd_keys",
            "create or show the key that signs channel manifests (for edge apps to verify)"),
)

#: ``build_parser(ALL_VERBS)`` builds every verb's full parser (tests, docs).
ALL_VERBS = "*"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USER_ERROR)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The ``shadow`` parser, with the full sub-parser of ``verb`` and one-line entries for the rest.

    Only ``verb``'s module is imported (every module for :data:`ALL_VERBS`);
    the other verbs are listed from :data:`COMMANDS`, which is all that
    ``shadow --help`` shows of them.
    """
    parser = OneLineErrorParser(
        prog="shadow", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=version_line())
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineErrorParser)
    verbs.required = True
    wanted = {c.module for c in COMMANDS if verb == ALL_VERBS or c.name == verb}
    loaded: set[str] = set()
    for command in COMMANDS:
        if command.module not in wanted:
            verbs.add_parser(command.name, help=command.help)
        elif command.module not in loaded:
            loaded.add(command.module)
            importlib.import_module(command.module).add_parsers(verbs)
    return parser


def version_line() -> str:
    """``shadow-sweep X.Y.Z``: the version lives in ``shadow.__version__`` alone."""
    from shadow import __version__

    return f"shadow-sweep {__version__}"


def _verb_of(argv: Sequence[str]) -> str | None:
    # The top-level parser has no option that takes a value, so the first
    # word that is not an option is the verb.
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    verb = _verb_of(words)
    try:
        args = build_parser(verb).parse_args(words)
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        return code
    except ShadowError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        sys.stderr.write(f"shadow {verb}: error: {message}\n")
        return EXIT_USER_ERROR
    except ModuleNotFoundError as exc:
        missing = missing_extra_message(exc)
        if missing is None:
            raise  # not an optional dependency: a broken install or a bug
        sys.stderr.write(f"shadow {verb}: error: {missing}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"shadow {verb}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.filename is None:
            raise  # no path to name: not the user's file system, a bug
        sys.stderr.write(f"shadow {verb}: error: {os_error_message(exc)}\n")
        return EXIT_USER_ERROR


def os_error_message(exc: OSError) -> str:
    """One line for a file-system refusal: the path, what the OS said, and the fix."""
    path = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    why = exc.strerror or exc.__class__.__name__
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = ("make it writable (chmod/chown, or remount), or point --home/--out at a folder "
               "you can write to")
    elif exc.errno == errno.ENOSPC:
        fix = "free some space on that disk, or point --home at another one"
    elif exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        fix = "a file stands where a folder is expected (or the other way round); move it away"
    else:
        fix = "check the path and its permissions"
    return " ".join(f"cannot use {path!s} ({why}); {fix}".split())


def _silence_stdout() -> None:
    # The reader closed the pipe: whatever is still buffered can never be
    # written, and Python would report the failed flush at exit. Point stdout
    # at /dev/null so that flush succeeds silently.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is no real file (a test's capture): nothing will flush to a pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
