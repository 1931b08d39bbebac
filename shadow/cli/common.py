"""Options shared by several verbs, and opening the store they name."""

from __future__ import annotations

import argparse

from selection.store import Store
from shadow.cli.output import FORMATS


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
    """The store the flags name; read-only verbs refuse to create an empty one."""
    return Store.open(args.home, url=args.store, create=create)
