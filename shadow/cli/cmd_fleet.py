"""``shadow fleet serve`` (publish a channel to devices) and ``shadow fleet list`` (who runs what)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any

from selection.records import DEFAULT_CHANNEL
from shadow.cli.common import add_format_option, add_store_options, int_arg, open_store
from shadow.cli.output import note, render_frame

TOKEN_ENV = "SHADOW_FLEET_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_CHARS = 16

FOLLOW_EPILOG = """\
examples:
  shadow fleet follow http://10.0.0.5:8780 --trust-key signing.pub --device-id robot-17 \\
      --token-file /etc/shadow/fleet.token --cache /var/lib/shadow/cache
  curl -s localhost:8000/predict -d '{"rows": [[0, 0, 0, 0, 0, 0, 0, 0]]}'

Each poll is one conditional request (a 304 when nothing changed). A new version
is downloaded to a temporary folder, its sha256, manifest signature and channel
checked and a smoke inference run; only then is it linked in the cache and
swapped in. A failed or unverified download leaves the current model serving and
is retried with backoff. A restart serves the cache's last verified version with
no network. /predict, /feedback, /model and /metrics are as `shadow serve`'s;
labels posted to /feedback are reported to the fleet server as canary evidence.
"""

EPILOG = """\
endpoints (devices poll them; `shadow serve --follow URL` is such a device):
  GET /v1/manifest?channel=C   the version this device should run (ETag; a matching
                               If-None-Match is a bodiless 304: an idle poll)
  GET /v1/artifact?sha256=H    the model's bytes
  GET /v1/fleet                every device, what it runs, the rollout
  GET /healthz                 200 while there is a version to offer

examples:
  shadow fleet serve                                   # production on 127.0.0.1:8780
  shadow fleet serve --host 0.0.0.0 --token-file /etc/shadow/fleet.token
  shadow promote cand-b --canary 10%                   # staged: 10% of devices first
  shadow promote cand-b --canary robot-1,robot-7 --widen-after 600
  shadow fleet list                                    # which device runs which model
  shadow fleet list --format json

Devices identify themselves (X-Shadow-Device) and report the version they run
and, per model, their predictions, failures and labelled outcomes. A staged
rollout (`shadow promote --canary`) offers the new version to that share of
devices (by a hash of the device id) and the previous one to the rest; it widens
(10% -> 50% -> 100%) after --widen-after seconds per stage once the labels show
the canary is not worse, and rolls back by itself when it is significantly
worse (one-sided two-proportion test judged only at planned looks, when each
side reaches --min-labelled labelled requests times 1, 2, 4, 8, 16, each at
alpha/10: at most alpha 0.01 in all however often the server looks) or its
predictions fail more often. Every step is a `rollout` event (`shadow events
--kind rollout`).

Bound to anything but loopback, the server needs a shared bearer token
(--token-file, or $SHADOW_FLEET_TOKEN): it guards the fleet view and the reports
a rollout is judged on. Models need no token to be safe: a device runs a model
only if its manifest is signed by a key it trusts. Put TLS in front when the
network is not yours.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "fleet", help="publish a channel to devices over the air, and list which device runs what",
        description="Over the air: devices pull a channel's model, verify it and hot-swap it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="fleet_verb", metavar="ACTION")
    sub.required = True
    s = sub.add_parser("serve", help="publish a channel to devices (staged rollouts included)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--channel", default=DEFAULT_CHANNEL,
                   help=f"channel to publish (default: {DEFAULT_CHANNEL})")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; any other needs a token)")
    s.add_argument("--port", type=int_arg(0, 65535, example=8780), default=8780,
                   help="port (default: 8780; 0 picks a free one, printed at start)")
    s.add_argument("--token-file", default=None, metavar="FILE",
                   help=f"the fleet's shared bearer token (default: ${TOKEN_ENV}); required "
                   "off loopback")
    s.add_argument("--refresh-ms", type=float, default=200, metavar="MS",
                   help="how often to read the store and judge a rollout (default: 200)")
    add_store_options(s)
    s.set_defaults(handler=run_fleet_serve)
    f = sub.add_parser("follow", help="a device: serve a channel pulled from a fleet server",
                       description="Be a device: pull the channel from URL into a verified local "
                       "cache, hot-swap it, and answer POST /predict as `shadow serve` does.",
                       epilog=FOLLOW_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("url", metavar="URL", help="the `shadow fleet serve` to follow, http://host:port")
    f.add_argument("--channel", default=DEFAULT_CHANNEL,
                   help=f"channel to follow (default: {DEFAULT_CHANNEL})")
    f.add_argument("--cache", default=None, metavar="DIR",
                   help="where verified versions are kept, so a restart serves offline "
                   "(default: $SHADOW_HOME/fleet-cache)")
    f.add_argument("--home", default=None, help="home whose fleet-cache is the default --cache")
    f.add_argument("--device-id", default=None, metavar="ID",
                   help="this device's id in the fleet (default: the host name)")
    f.add_argument("--trust-key", action="append", default=None, metavar="PUBFILE",
                   help="public key a manifest must be signed by (repeatable; default: "
                   "$SHADOW_TRUST_KEYS); required")
    f.add_argument("--token-file", default=None, metavar="FILE",
                   help=f"the fleet's bearer token (default: ${TOKEN_ENV})")
    f.add_argument("--poll-ms", type=float, default=5000, metavar="MS",
                   help="how often to poll the fleet server (default: 5000; a 304 when idle)")
    f.add_argument("--host", default="127.0.0.1", help="address /predict binds (default: 127.0.0.1)")
    f.add_argument("--port", type=int_arg(0, 65535, example=8000), default=8000,
                   help="port of /predict (default: 8000; 0 picks a free one)")
    f.add_argument("--no-log", action="store_true",
                   help="keep no prediction log (then no labelled evidence is reported)")
    f.set_defaults(handler=run_fleet_follow)
    ls = sub.add_parser("list", help="which device runs which model, last seen, rollout state")
    ls.add_argument("--channel", default=DEFAULT_CHANNEL,
                    help=f"channel whose fleet to list (default: {DEFAULT_CHANNEL})")
    add_format_option(ls)
    add_store_options(ls)
    ls.set_defaults(handler=run_fleet_list)


def read_token(path: str | None) -> str | None:
    """The token of ``--token-file`` (else ``$SHADOW_FLEET_TOKEN``); ConfigError if unusable."""
    from selection.errors import ConfigError

    if path is None:
        token = os.environ.get(TOKEN_ENV) or None
        where = f"${TOKEN_ENV}"
    else:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {path} must be a readable text file; "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        where = path
    if token is not None and (len(token) < MIN_TOKEN_CHARS or not token.isprintable()
                              or " " in token):
        raise ConfigError(f"the fleet token in {where} must be at least {MIN_TOKEN_CHARS} "
                          "printable characters without spaces; make one with "
                          "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return token


def run_fleet_serve(args: argparse.Namespace) -> int:
    from selection.channels.names import check_channel
    from selection.errors import ConfigError
    from selection.fleet.server import make_fleet_server

    check_channel(args.channel)
    if not 10 <= args.refresh_ms <= 60_000:
        raise ConfigError(f"--refresh-ms must be in 10..60000; got {args.refresh_ms:g}; e.g. 200")
    token = read_token(args.token_file)
    if token is None and args.host not in LOOPBACK:
        raise ConfigError(f"--host {args.host} is reachable from other machines, so the fleet "
                          f"server needs a token: pass --token-file FILE (or set ${TOKEN_ENV}); "
                          "devices send it as `Authorization: Bearer`")
    with open_store(args) as store:
        try:
            server = make_fleet_server(store, args.channel, args.host, args.port, token=token,
                                       refresh_s=args.refresh_ms / 1000, error_log=note)
        except OSError as exc:
            raise ConfigError(f"could not listen on {args.host}:{args.port} ({exc.strerror}); "
                              "pick another --port (0 = any free one)") from None
        server.on_step = note
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        current = server.state().current
        note(f"publishing channel '{args.channel}' on {server.url} ("
             + (f"version {current.offer.version}" if current else "nothing promoted yet")
             + ("; token required" if token else "; no token (loopback)") + ")")
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    note("stopped")
    return 0


def run_fleet_follow(args: argparse.Namespace) -> int:
    import socket

    from selection.errors import ConfigError, ShadowError
    from selection.home import Home
    from selection.live.log import PredictionLog
    from selection.runtime.follow import RemoteChannelRuntime
    from selection.runtime.remote import check_device_id
    from selection.runtime.server import make_server
    from selection.signing import trust_keys_from_env

    keys = args.trust_key or trust_keys_from_env()
    if not keys:
        raise ConfigError("a device serves a model fetched over the network only if its manifest "
                          "is signed: pass --trust-key PUBFILE (or $SHADOW_TRUST_KEYS), the "
                          "promoting home's keys/signing.pub")
    if not 100 <= args.poll_ms <= 3_600_000:
        raise ConfigError(f"--poll-ms must be in 100..3600000; got {args.poll_ms:g}; e.g. 5000")
    device_id = check_device_id(args.device_id or socket.gethostname().split(".")[0])
    cache = Path(args.cache) if args.cache else Home.resolve(args.home).root / "fleet-cache"
    log = None if args.no_log else PredictionLog(cache / "live" / f"{args.channel}.db",
                                                 channel=args.channel)
    runtime = RemoteChannelRuntime(args.url, cache, args.channel, device_id=device_id,
                                   trusted_keys=keys, token=read_token(args.token_file),
                                   poll_s=args.poll_ms / 1000, log=log, on_event=_device_event)
    try:
        model = runtime.start()
        server = make_server(runtime, args.host, args.port, error_log=note)
    except BaseException as exc:
        runtime.stop()
        if log is not None:
            log.close()  # its writer thread and database handle would outlive the refusal
        if isinstance(exc, OSError) and not isinstance(exc, ShadowError):
            raise ConfigError(f"could not listen on {args.host}:{args.port} ({exc.strerror}); "
                              "pick another --port (0 = any free one)") from None
        raise
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    note(f"device {device_id} serving channel '{args.channel}' (version {model.version}) on "
         f"{server.url}; following {args.url} every {args.poll_ms:g} ms; cache {cache}")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        runtime.stop()
        if log is not None:
            log.close()
    note("stopped")
    return 0


def _device_event(event: Any) -> None:
    if event.kind == "swapped":
        note(f"swapped to {event.version} (candidate {event.candidate_id})")
    elif event.kind in ("refused", "missing"):
        note(f"{event.kind}: {event.detail}; still serving the previous model")


def run_fleet_list(args: argparse.Namespace) -> int:
    import time

    import pandas as pd

    from selection.channels.names import check_channel
    from selection.fleet.devices import fleet_file, read_devices
    from selection.fleet.offers import OfferBook

    check_channel(args.channel)
    with open_store(args) as store:
        devices = read_devices(fleet_file(store.home.root, args.channel))
        state = OfferBook(store, args.channel).refresh()
    rollout = state.rollout
    now = time.time()
    rows = [state.device_row(device, args.channel, now) for device in devices]
    if args.format == "table":
        for row in rows:
            row["last_seen"], row["seen_s_ago"] = row["last_seen"][:19], round(row["seen_s_ago"], 1)
    columns = ["device_id", "running", "assigned", "in_sync", "ahead_of_store", "canary",
               "last_seen", "seen_s_ago", "polls", "rollout", "address"]
    render_frame(pd.DataFrame(rows, columns=columns, dtype=object), args.format,
                 table_columns=columns[:-1])
    ahead = [row["device_id"] for row in rows if row["ahead_of_store"]]
    if ahead:
        note(f"{len(ahead)} device(s) run a newer history row than the store's current one "
             f"({', '.join(ahead[:5])}{', ...' if len(ahead) > 5 else ''}): was the store restored "
             "from an older backup? Devices never go back to an older row; promote until the "
             "channel's row passes theirs, or clear their caches to start them over")
    if rollout is not None and args.format == "table":
        note(f"rollout {rollout.rollout_id} of {rollout.candidate_id}: {rollout.state}, "
             f"{rollout.share:.0%} of devices on the new model ({rollout.last_reason})")
    return 0
