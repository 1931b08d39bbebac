"""Options shared by several verbs, opening the store they name, and naming missing extras.

Light on purpose (standard library and ``selection.errors`` only): every
verb's parser is built from here, and ``shadow VERB --help`` must not load
the store or the training stack.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from selection.errors import ConfigError, ShadowError
from selection.home import Home
from shadow.cli.output import FORMATS

if TYPE_CHECKING:
    from selection.store import Store

#: The variable naming the store's URL (``selection.store.STORE_ENV``; that module needs SQLAlchemy).
STORE_ENV = "SHADOW_STORE"
#: The distribution whose extras say which optional dependency ships where.
DISTRIBUTION = "shadow-sweep"
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
#: Extras never named as the fix: "all" is everything, the others are for developing.
_NOT_SUGGESTED = frozenset({"all", "test", "bench"})


#: The largest int a flag may take: what a database column (and numpy's int64) holds.
INT64_MAX = 2**63 - 1


class MissingExtraError(ShadowError, ImportError):
    """A verb needs optional dependencies (an extra of shadow-sweep) that are not installed."""


def int_arg(low: int = 0, high: int = INT64_MAX, example: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an int flag in ``low..high``: every int flag uses one.

    ``int`` alone lets ``--top 10**20`` through to a SQL ``LIMIT`` (an
    overflow and a traceback later); this refuses it where it is typed, as a
    usage error (one line, exit 2) that states the range and an example.
    """
    hint = f"; e.g. {example if example is not None else max(low, min(high, 1))}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an int >= {low} and <= {high}; got {_short(text)}{hint}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an int >= {low} and <= {high}; got {_short(text)}{hint}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value" messages
    return parse


def _short(text: str, limit: int = 40) -> str:
    # A 5,000-digit number is not worth echoing whole on the one error line.
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_out_path(path: str, flag: str = "--out") -> Path:
    """``path`` as a file this command may create or replace, checked before any work.

    Refused (ConfigError, one line): a directory, a path whose folder does
    not exist or is not a folder, and a folder this user cannot write to.
    """
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} must name a file; {str(out)!r} is a directory; "
                          f"pass a file path such as {str(out / 'board.csv')!r}")
    folder = out.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"{flag} must be in an existing folder; {str(folder)!r} {what}; "
                          "create it first or pick another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} must be in a folder you can write to; {str(folder)!r} is not "
                          "writable; pick another path")
    return out


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where state lives")
    group.add_argument(
        "--home", metavar="DIR", default=None,
        help="shadow home holding shadow.db, artifacts/ and channels/ "
        "(default: $SHADOW_HOME or ./.shadow)",
    )
    group.add_argument(
        "--store", metavar="URL", default=None,
        help="database URL for the metadata instead of $HOME/shadow.db, "
        "e.g. postgresql://user@host/db (default: $SHADOW_STORE)",
    )


def add_format_option(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "--format", choices=FORMATS, default=default,
        help=f"output format (default: {default}); json goes to stdout alone",
    )


def open_store(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The store the flags name; read-only verbs refuse to create an empty one.

    Raises :class:`MissingExtraError` (a ShadowError) when the store's
    dependencies are not installed, so a caller that can do without the store
    (``shadow serve`` on an edge device) catches it like any other store error.
    """
    try:
        from selection.store import Store
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            raise
        if not create and not (args.store or os.environ.get(STORE_ENV)):
            # Nothing to open here (an edge device holds channels/ only): say that
            # first, as Store.open would, rather than ask for an extra.
            Home.resolve(args.home).require()
        raise MissingExtraError(message) from None
    return Store.open(args.home, url=args.store, create=create)


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that ships the missing module, or None if no extra does.

    The extras are read from the installed distribution's metadata, so
    ``pyproject.toml`` stays the one place that says which dependency is
    optional and where it ships.
    """
    module = (exc.name or "").partition(".")[0]
    extra = extra_providing(module) if module else None
    if extra is None:
        return None
    return (f"this needs the optional dependencies of the '{extra}' extra (no module named "
            f"{module!r}); install them with: pip install '{DISTRIBUTION}[{extra}]'")


def extra_providing(module: str) -> str | None:
    """The first product extra of shadow-sweep (not "all", "test", "bench") that installs ``module``."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        requirements = requires(DISTRIBUTION) or []
    except PackageNotFoundError:  # a source checkout that was never installed
        return None
    wanted = _import_name(module)
    for requirement in requirements:
        name, extra = _REQUIREMENT_NAME.match(requirement), _EXTRA_MARKER.search(requirement)
        if name and extra and extra.group(1) not in _NOT_SUGGESTED and _import_name(name.group(1)) == wanted:
            return extra.group(1)
    return None


def _import_name(distribution: str) -> str:
    # Every optional dependency here imports under its normalized name
    # (SQLAlchemy -> sqlalchemy, onnxruntime-qnn -> onnxruntime_qnn).
    return re.sub(r"[-.]+", "_", distribution).lower()
