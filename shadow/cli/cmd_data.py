"""``shadow data append`` and ``shadow data versions``: a catalog dataset that grows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shadow.cli.common import add_format_option
from shadow.cli.output import render_frame, render_mapping

# pandas and the loader load when a verb runs, not when its parser is built.

EPILOG = """\
examples:
  shadow data append noaa-weather rows-2026-11.csv      # validate, then store as the next version
  shadow data append noaa-weather rows-2026-12.parquet --home /srv/shadow
  shadow data versions noaa-weather                     # every version, with its fingerprint
  shadow data versions noaa-weather --format json

A batch must have exactly the dataset's columns, numeric features and no
missing values; where the manifest names a time_column, its rows must not go
back in time (nor before the rows already stored). Label values never seen
before are reported on stderr and recorded. A bad batch is refused whole:
nothing stored changes. Batches are kept, byte for byte, under
$SHADOW_HOME/data/NAME/batches/; versions.json lists the versions. The next
`shadow sweep run` with the same --home trains on the latest version.

A folder dataset ([source] kind = "directory") gets the checked file copied
into its folder (its name must sort after the last file there); a SQL table
dataset refuses: insert the rows into the table. For both, `data versions`
lists what the folder or table holds now and pins those versions in the home.
"""


def add_parsers(verbs: Any) -> None:
    data = verbs.add_parser(
        "data", help="grow a catalog dataset with new labelled rows, and list its versions",
        description="Grow a catalog dataset with batches of new labelled rows; every state "
        "of it is a version with a fingerprint that sweeps record.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = data.add_subparsers(dest="action", metavar="ACTION", parser_class=type(data))
    actions.required = True
    append = actions.add_parser(
        "append", help="check a CSV or Parquet batch and add it as the dataset's next version",
        description="Check a batch of labelled rows against the dataset's manifest and store "
        "it, immutable, as the dataset's next version.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    append.add_argument("name", metavar="NAME", help="catalog dataset name, or its dataset.toml path")
    append.add_argument("file", metavar="FILE", help="the batch: a .csv or .parquet file")
    _add_home(append)
    add_format_option(append)
    append.set_defaults(handler=run_append)
    versions = actions.add_parser(
        "versions", help="list a dataset's versions, oldest first",
        description="List a dataset's versions: 0 is the catalog's own data, each append "
        "adds one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    versions.add_argument("name", metavar="NAME", help="catalog dataset name, or its dataset.toml path")
    _add_home(versions)
    add_format_option(versions)
    versions.set_defaults(handler=run_versions)


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", metavar="DIR", default=None,
        help="shadow home whose data/ folder holds the batches (default: $SHADOW_HOME or ./.shadow)",
    )


def run_append(args: argparse.Namespace) -> int:
    from selection.home import Home
    from shadow.data.append import append_batch
    from shadow.data.catalog import find_manifest

    manifest = find_manifest(args.name, relative_to=Path.cwd())
    result = append_batch(manifest, Path(args.file), Home.resolve(args.home))
    if result.new_labels:
        seen = ", ".join(f"{label!r} ({n} row{'s' if n > 1 else ''})"
                         for label, n in result.new_labels.items())
        # A warning, not a refusal: a new class is real news, but it changes what models output.
        sys.stderr.write(
            f"shadow data append: warning: label values never seen before in dataset "
            f"{manifest.name!r}: {seen}; they become new classes (recorded in version "
            f"{result.version.version})\n"
        )
    version = result.version
    render_mapping({
        "dataset": manifest.name,
        "version": version.version,
        "fingerprint": version.fingerprint,
        "rows": version.rows,
        "batch_rows": result.batch_rows,
        "batches": len(version.batches),
        "new_labels": list(version.new_labels),
        "stored": str(result.path),
    }, args.format)
    return 0


def run_versions(args: argparse.Namespace) -> int:
    import pandas as pd

    from selection.home import Home
    from shadow.data.catalog import find_manifest
    from shadow.data.loader import list_versions

    manifest = find_manifest(args.name, relative_to=Path.cwd())
    home = Home.resolve(args.home)
    # A folder or table: listing pins the versions shown (see shadow.data.directory_source).
    versions = list_versions(manifest, home, pin=True)
    rows = [
        {
            "version": v.version,
            "fingerprint": v.fingerprint,
            "rows": v.rows,
            "batches": len(v.batches),
            "created_at": v.created_at or None,
            "source": v.source or str(manifest.path),
            "new_labels": ",".join(v.new_labels) or None,
        }
        for v in versions
    ]
    render_frame(pd.DataFrame(rows), args.format, max_width=64)
    return 0
