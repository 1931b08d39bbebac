"""``shadow``: the command line.

Each verb lives in its own module with ``add_parser`` and ``run``. This module
wires them up and owns the error contract: a user error (any ShadowError, a bad
flag) is one line on stderr and exit code 2; Ctrl-C is exit 130; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from selection.errors import ShadowError
import importlib
import pkgutil
from types import ModuleType

import shadow.cli

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

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


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="shadow", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=_version())
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineErrorParser)
    verbs.required = True
    for module in verb_modules():
        module.add_parsers(verbs)
    return parser


def verb_modules() -> list[ModuleType]:
    """Every ``shadow/cli/cmd_*.py``, ordered by its ``ORDER`` (adding a verb is adding a file)."""
    modules = [
        importlib.import_module(f"shadow.cli.{info.name}")
        for info in pkgutil.iter_modules(shadow.cli.__path__)
        if info.name.startswith("cmd_")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"shadow-sweep {version('shadow-sweep')}"
    except PackageNotFoundError:
        return "shadow-sweep (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ShadowError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        sys.stderr.write(f"shadow {args.verb}: error: {message}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"shadow {args.verb}: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
