"""``shadow doctor``: check the store, channels and artifacts; ``--repair`` fixes channel files."""

from __future__ import annotations

import argparse
from typing import Any

from shadow.cli.common import add_format_option, add_store_options, open_store
from shadow.cli.output import note, render_frame

#: Exit status when a problem remains (2 stays reserved for a bad command line).
EXIT_PROBLEMS = 1

EPILOG = """\
checks: the store opens and its schema is one this version reads; every channel's
link resolves inside channels/.versions (never outside the home) to the version of
the database's current history row; its model and manifest are regular files, the
model has the sha256 that row recorded and no tensor stored in another file, and
the manifest says what the database says; when the home has a signing key
(keys/signing.key), the manifest's signature (manifest.sig) verifies (a retired
key warns, a missing or invalid one fails); each channel's history is an unbroken
chain; every artifact hashes to its name; no temporary files are left by an
interrupted promote or rollback.

exit status: 0 when nothing fails (warnings allowed), 1 when a problem remains.

examples:
  shadow doctor                   # report only, changes nothing
  shadow doctor --repair          # rewrite channel files from the database, drop leftovers
  shadow doctor --format json

--repair never edits the history: the database is the source of truth and only
files are rewritten to follow it (a link re-pointed elsewhere is pointed back; a
folder outside the home is never written to). A tampered artifact, or one that
reads other files, cannot be repaired here; restore it, roll back or promote
another candidate.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "doctor", help="check store, channels and artifacts; --repair fixes channel files",
        description="Check that the database, the channel files and the artifacts agree.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repair", action="store_true",
                   help="make channel files match the database and delete leftovers")
    add_format_option(p)
    add_store_options(p)
    p.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    import pandas as pd

    from selection.channels.doctor import diagnose, repair

    with open_store(args) as store:
        findings = repair(store) if args.repair else diagnose(store)
    frame = pd.DataFrame([f.as_dict() for f in findings], columns=["check", "status", "detail", "fix"])
    render_frame(frame, args.format, table_columns=["status", "check", "detail", "fix"],
                 max_width=120)
    # Only the final diagnosis counts: a "fail" that repair fixed is followed by an "ok".
    final = findings if not args.repair else [f for f in findings if f.status != "fixed"]
    failing = [f for f in final if f.status == "fail"]
    if args.format == "table":
        if not failing:
            note("healthy")
        elif args.repair:
            note(f"{len(failing)} problem(s) remain; see the fix column")
        else:
            note(f"{len(failing)} problem(s) found; `shadow doctor --repair` fixes channel files")
    return EXIT_PROBLEMS if failing else 0
