"""``shadow keys init|show``: the key pair that signs every channel version's manifest."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selection.home import Home
from shadow.cli.output import note, render_mapping

HELP = "create or show the key that signs channel manifests (for edge apps to verify)"

EPILOG = """\
Promotion signs each version's manifest.json with the home's Ed25519 private key
($SHADOW_HOME/keys/signing.key, mode 0600; created on first promotion if missing)
and writes manifest.sig beside it. An edge app given the public key
($SHADOW_HOME/keys/signing.pub) refuses any version that is unsigned, signed by
another key, or whose manifest or model was changed after signing:

  shadow keys show                               # the public key file and its id
  scp .shadow/keys/signing.pub device:/etc/shadow/trusted.pub
  shadow serve --trust-key /etc/shadow/trusted.pub   # on the device
  ChannelRuntime(channels, trusted_keys=["/etc/shadow/trusted.pub"])   # in an app

rotation: `shadow keys init --rotate` makes a new pair (the old public key is kept
in keys/retired/, the old private key deleted); give apps the new public key
beside the old one (--trust-key twice), run `shadow doctor --repair` to sign the
current versions again, then drop the old key from the apps.

Never copy signing.key to a device: whoever holds it can sign a model of theirs.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser("keys", help=HELP, description=HELP.capitalize() + ".", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="keys_action", metavar="ACTION")
    actions.required = True
    init = actions.add_parser("init", help="create the key pair if the home has none",
                              description="Create the home's signing key pair if it has none "
                              "(promotion does this too on first use).")
    init.add_argument("--rotate", action="store_true",
                      help="replace an existing key pair with a new one (the old public key "
                      "is kept in keys/retired/)")
    show = actions.add_parser("show", help="print the public key file and its id",
                              description="Print where the public key is (the file to give "
                              "edge apps) and its key id.")
    for sub in (init, show):
        sub.add_argument("--home", metavar="DIR", default=None,
                         help="shadow home holding keys/ (default: $SHADOW_HOME or ./.shadow)")
        sub.add_argument("--format", choices=("table", "json"), default="table",
                         help="output format (default: table); json goes to stdout alone")
    init.set_defaults(handler=run_init)
    show.set_defaults(handler=run_show)


def run_init(args: argparse.Namespace) -> int:
    from selection.signing import KeyPaths, describe, ensure_signing_key, rotate_signing_key

    home = Home.resolve(args.home).check_folder()
    paths = KeyPaths.of(home.root)
    if args.rotate and paths.exists():
        new, old = rotate_signing_key(paths)
        note(f"rotated: new key {new.key_id}; the old key {old.key_id} is retired "
             f"({paths.retired / (old.key_id + '.pub')}); give apps {paths.public} as well, "
             "then run `shadow doctor --repair` to sign the current versions again")
    else:
        key, created = ensure_signing_key(paths)
        note(f"created signing key {key.key_id} at {paths.private}" if created else
             f"the home already has signing key {key.key_id} (use --rotate to replace it)")
    _render(describe(paths), args.format)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from selection.errors import NotFoundError
    from selection.signing import KeyPaths, describe

    home = Home.resolve(args.home).check_folder()
    paths = KeyPaths.of(home.root)
    if not paths.exists():
        raise NotFoundError(f"the home at {home.root} has no signing key (expected "
                            f"{paths.private}); create one with `shadow keys init` (the first "
                            "promotion creates it too)")
    _render(describe(paths), args.format)
    return 0


def _render(data: dict[str, Any], fmt: str) -> None:
    if fmt == "table":  # one line per key; lists as comma-separated ids
        data = {k: ", ".join(v) if isinstance(v, list) else v for k, v in data.items()}
    render_mapping(data, fmt)


@contextmanager
def announce_new_key(home: Home) -> Iterator[None]:
    """Around a change that signs: say where the signing key went if the change created it.

    The library creates the key silently on first use (``selection.signing``);
    the CLI tells the person at the terminal, once the change succeeded (a
    refused promotion says only why it was refused).
    """
    from selection.signing import KeyPaths, load_signing_key

    paths = KeyPaths.of(home.root)
    existed = paths.exists()
    yield
    if not existed and paths.exists():
        note(f"created signing key {load_signing_key(paths).key_id} at {paths.private}: channel "
             f"manifests are signed with it; give edge apps {paths.public} (`shadow keys --help`)")
