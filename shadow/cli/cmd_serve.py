"""``shadow serve``: answer predictions from a channel's model and hot-swap it on promotion."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

# Only the runtime and the channel files at the top: `shadow serve` runs on a
# slim install (no store, no training stack); the store is optional here.
from selection.channels.names import check_channel
from selection.home import Home
from selection.live.db import live_log_path
from selection.live.log import DEFAULT_FLUSH_INTERVAL_S, PredictionLog
from selection.live.shadow_writer import ShadowLogProcess
from selection.records import DEFAULT_CHANNEL
from selection.runtime import DEFAULT_POLL_S, ChannelRuntime, RuntimeEvent
from selection.runtime.server import DEFAULT_HOST, DEFAULT_PORT, ServerLimits, make_server
from selection.runtime.shadows import DEFAULT_QUEUE_SIZE, MAX_SHADOWS, ShadowScorer
from shadow.cli.common import (
    STORE_ENV,
    MissingExtraError,
    add_store_options,
    int_arg,
    open_store,
)
from shadow.cli.output import note

if TYPE_CHECKING:
    from selection.runtime.model import LoadedModel
    from selection.store import Store

EPILOG = """\
endpoints (JSON in, JSON out):
  POST /predict   {"rows": [[0.1, 0.2, ...], ...]}           values in the model's feature order
                  {"rows": [{"temp": 0.1, "dew": 0.2, ...}]}  or objects keyed by feature name
                  -> {"predictions": [...], "probabilities": [[...]], "candidate_id": ..., "sha256": ...}
                  every answer carries "request_id" (your X-Request-Id header if valid, else new)
  POST /feedback  {"request_id": "...", "label": "rain"} or a list of them: the labels that
                  came back (404 unknown id, 409 a different label for a labelled request,
                  422 a label the model cannot predict; the same label twice is fine)
  GET  /metrics   Prometheus text format: requests, errors, latency, shadows, swaps, model
  GET  /model     the model answering now (features, classes, version), swap counters, events
  GET  /healthz   200 {"status": "ok", ...} while a model is loaded
  bad requests get a 4xx JSON {"error": "...", "status": N}; at most 10,000 rows per request.
  A connection idle for --idle-timeout is closed; a request must arrive whole within
  --request-timeout of its first byte (else 408); past --max-connections, a 503.

examples:
  shadow serve                                  # production on http://127.0.0.1:8000
  shadow serve --shadows 4                      # + the latest sweep's top 4 as shadows
  shadow serve --shadow cand-a --shadow cand-b  # these two as shadows
  shadow serve --channel canary --port 8001
  curl -s localhost:8000/predict -d '{"rows": [[0, 0, 0, 0, 0, 0, 0, 0]]}'

The server reads only $SHADOW_HOME/channels/<channel>. It checks that link every
--poll-ms; when a promotion or rollback moves it, the new model is verified
(sha256), loaded and smoke-tested beside the old one, then swapped in at once:
no restart, no failed request. A model that fails any check is refused (logged
here) and the old one keeps serving. Stop with Ctrl-C or SIGTERM.

what it trusts: the link must lead inside channels/.versions (never outside the
home), the files must be regular files, the model must hash to its manifest's
sha256 and hold no tensor stored in another file. With a store (at --home or
--store) it also serves only a version the store recorded for this channel, with
that sha256 and manifest, and never moves back to an older history row; anything
else is refused (at start: exit 2) until `shadow doctor --repair`. Files that
only lag the database (an interrupted change) are served with a warning.
A store that is named (--store, $SHADOW_STORE) or whose shadow.db is in the
home must open, else serve refuses to start (exit 2); only with neither does it
serve without a store, and its start line says which checks then apply.

shadow traffic: with --shadows K (or --shadow ID, repeatable) up to K challengers
score the same inputs off the request path, with the artifact of the champion's
device (the numerics the champion runs): a bounded queue (--shadow-queue) and a
low-priority worker; when the queue is full the shadows skip the request and
count it: the champion's answer never waits. --shadows K picks the top K on that
device (leaderboard rank, eligible, not the champion) of the latest sweep of the
champion's dataset; a shadow whose features or classes differ from the
champion's is refused at start (exit 2). After a
promotion the new champion stops shadowing and the old one takes its place.
Every answer (champion and shadows) is logged with its request id, model id and
sha256 in $SHADOW_HOME/live/<channel>.db (SQLite, WAL), in batches committed every
--log-flush-ms (fsync'd): SIGTERM or Ctrl-C writes everything answered; a SIGKILL
loses at most the batch being committed and the one gathering (about two flush
intervals of answers; /model shows log.max_batch). The shadows' rows are written
by a process of their own (so their Python work never holds the server's lock on
the interpreter), after their request's row. `shadow leaderboard --live`
compares the models on the requests whose labels came back.

signed manifests: with --trust-key PUBFILE (repeatable; or $SHADOW_TRUST_KEYS,
files separated by ':') a version is served only if its manifest.sig is a valid
signature of its manifest by one of those keys (`shadow keys show` on the promoting
machine names the file). An unsigned, re-signed or edited version is refused: at
start exit 2, on a hot swap the old model keeps serving. This is the check for a
device without the store: writing the channels folder no longer lets anyone serve
a model; forging a version takes the private key.
"""


def add_parsers(verbs: Any) -> None:
    p = verbs.add_parser(
        "serve", help="serve a channel's model over HTTP, hot-swapping it on promotion",
        description="Serve predictions from a channel's model; follow promotions and "
        "rollbacks without a restart.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--channel", default=DEFAULT_CHANNEL,
                   help=f"channel to serve (default: {DEFAULT_CHANNEL})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default: {DEFAULT_HOST}; there is no authentication, "
                   "so bind another address only behind a proxy you trust)")
    p.add_argument("--port", type=int_arg(0, 65535, example=8000), default=DEFAULT_PORT,
                   help=f"port (default: {DEFAULT_PORT}; 0 picks a free one, printed at start)")
    p.add_argument("--poll-ms", type=float, default=DEFAULT_POLL_S * 1000,
                   help=f"how often to look for a new model (default: {DEFAULT_POLL_S * 1000:g})")
    p.add_argument("--no-reload", action="store_true",
                   help="serve the model found at start only (no hot swap)")
    p.add_argument("--threads", type=int_arg(1, 1024, example=1), default=1,
                   help="ONNX Runtime threads per inference (default: 1; requests already "
                   "run in parallel)")
    defaults = ServerLimits()
    p.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout_s, metavar="S",
                   help="close a keep-alive connection idle this many seconds "
                   f"(default: {defaults.idle_timeout_s:g})")
    p.add_argument("--request-timeout", type=float, default=defaults.request_timeout_s,
                   metavar="S", help="a request (headers and body) must arrive within this "
                   f"many seconds of its first byte (default: {defaults.request_timeout_s:g})")
    p.add_argument("--max-connections", type=int_arg(1, 100_000, example=1024),
                   default=defaults.max_connections, metavar="N",
                   help="connections served at once, one thread each; more get a 503 "
                   f"(default: {defaults.max_connections})")
    p.add_argument("--access-log", action="store_true", help="log protocol errors to stderr")
    p.add_argument("--trust-key", action="append", metavar="PUBFILE", default=None,
                   help="serve only versions whose manifest this public key signed; repeat to "
                   "trust several (rotation) (default: $SHADOW_TRUST_KEYS, else no check)")
    p.add_argument("--shadows", type=int_arg(0, MAX_SHADOWS, example=4), default=None,
                   metavar="K", help="score requests with the top K challengers of the latest "
                   "sweep of the champion's dataset too, off the request path (needs the store)")
    p.add_argument("--shadow", action="append", default=None, metavar="CANDIDATE_ID",
                   help="a shadow by id (repeatable; instead of the --shadows pick)")
    p.add_argument("--shadow-queue", type=int_arg(1, 1_000_000, example=256),
                   default=DEFAULT_QUEUE_SIZE, metavar="N",
                   help=f"requests waiting for the shadows before they skip "
                   f"(default: {DEFAULT_QUEUE_SIZE})")
    p.add_argument("--no-log", action="store_true",
                   help="keep no prediction log (then /feedback is refused)")
    p.add_argument("--log-flush-ms", type=float, default=DEFAULT_FLUSH_INTERVAL_S * 1000,
                   metavar="MS", help="commit the prediction log at least this often "
                   f"(default: {DEFAULT_FLUSH_INTERVAL_S * 1000:g}; a SIGKILL loses about two "
                   "intervals of answers)")
    add_store_options(p)
    p.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from selection.errors import ConfigError

    check_channel(args.channel)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535; got {args.port}; e.g. --port 8000")
    if not 0.5 <= args.poll_ms <= 60_000:
        raise ConfigError(f"--poll-ms must be in 0.5..60000; got {args.poll_ms:g}; e.g. 5")
    if args.threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {args.threads}")
    if not 1 <= args.log_flush_ms <= 60_000:
        raise ConfigError(f"--log-flush-ms must be in 1..60000; got {args.log_flush_ms:g}; "
                          "e.g. 50")
    limits = _limits(args)
    home = Home.resolve(args.home)
    store = _open_store_if_any(args)
    try:
        return _serve(args, home, store, limits)
    finally:
        if store is not None:
            store.close()


def _serve(args: argparse.Namespace, home: Home, store: Store | None, limits: ServerLimits) -> int:
    from selection.errors import ConfigError

    verify = None
    if store is not None:
        from selection.channels.trust import store_verifier

        _warn_if_files_lag(store, args.channel)
        verify = store_verifier(store, args.channel)  # serve only what the store recorded
    wanted = args.shadow is not None or bool(args.shadows)
    if wanted and store is None:
        raise ConfigError("--shadows/--shadow load the challengers from the store, and this home "
                          "has none; run serve where the store is (--home/--store), or embed "
                          "ChannelRuntime(shadows=...) on the device")
    shadows = _load_shadows(store, args) if wanted and store is not None else []
    log = None if args.no_log else PredictionLog(
        live_log_path(home.root, args.channel), channel=args.channel,
        flush_interval_s=args.log_flush_ms / 1000)
    # The shadows' rows (K per request) are written by a process of their own, at the same
    # priority as the champion log's writer: written here, that Python work took the
    # interpreter's lock from the request threads. (A second writer thread at a lower priority
    # was tried first: under load it held SQLite's write lock while starved of CPU.)
    sink = (ShadowLogProcess(log.path, channel=args.channel, flush_interval_s=log.flush_interval_s)
            if wanted and shadows and log is not None else None)
    logs = [log] if log is not None else []
    scorer = (ShadowScorer(shadows, log, queue_size=args.shadow_queue,
                           max_models=len(shadows), sink=sink) if wanted else None)
    runtime = ChannelRuntime(home.channels_dir, args.channel, poll_s=args.poll_ms / 1000,
                             reload=not args.no_reload, threads=args.threads, on_event=_log_event,
                             verify=verify, trusted_keys=_trust_keys(args), log=log,
                             shadows=scorer)
    try:
        model = runtime.start()
    except BaseException:
        _close(logs, sink)
        raise
    try:
        server = make_server(runtime, args.host, args.port,
                             log=note if args.access_log else None, limits=limits,
                             error_log=note)
    except OSError as exc:
        runtime.stop()
        _close(logs, sink)
        raise ConfigError(f"could not listen on {args.host}:{args.port} ({exc.strerror}); "
                          "pick another --port (0 = any free one)") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        note(f"warning: listening on {args.host}, reachable from other machines; "
             "/predict has no authentication")
    # SIGTERM (docker stop, systemd, the benchmark) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    note(f"serving channel '{args.channel}' (candidate {model.candidate_id}, sha256 "
         f"{model.sha256[:12]}) on {server.url}"
         + ("" if args.no_reload else f"; watching for promotions every {args.poll_ms:g} ms")
         + ("" if runtime.trusted_keys is None else
            f"; manifests must be signed by key {' or '.join(sorted(runtime.trusted_keys))}")
         + ("" if store is not None else _edge_checks(runtime.trusted_keys))
         + ("" if scorer is None else "; shadows: " + (", ".join(
             m.candidate_id for m in scorer.models) or "none"))
         + ("" if log is None else f"; logging to {log.path}"))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        runtime.stop()  # shadows finish their queue, then every answer is committed
        _close(logs, sink)
    shadow_rows = sink.stats() if sink is not None else {}
    logged = sum(each.counts["logged"] for each in logs) + shadow_rows.get("logged", 0)
    dropped = sum(each.counts["dropped"] for each in logs) + shadow_rows.get("dropped", 0)
    note("stopped" + ("" if log is None else f" ({logged} records logged, {dropped} dropped)"))
    return 0


def _close(logs: list[PredictionLog], sink: ShadowLogProcess | None) -> None:
    """Commit the champion's rows, then what the shadows' process received, then close (idempotent).

    In that order: the shadows' rows wait for their requests' rows.
    """
    for each in logs:
        if not each.closed:
            each.flush()
    if sink is not None:
        sink.close()
    for each in logs:
        each.close()


def _load_shadows(store: Store, args: argparse.Namespace) -> list[LoadedModel]:
    """The shadows ``--shadow``/``--shadows`` ask for (``selection.channels.shadow_set``)."""
    from selection.channels.shadow_set import load_shadows

    return load_shadows(store, args.channel, names=args.shadow, k=args.shadows,
                        threads=args.threads)


def _trust_keys(args: argparse.Namespace) -> list[str] | None:
    """The public key files of --trust-key, else of $SHADOW_TRUST_KEYS; None: no signature check."""
    from selection.signing import trust_keys_from_env

    return args.trust_key or trust_keys_from_env() or None


def _open_store_if_any(args: argparse.Namespace) -> Store | None:
    """The store beside the channels; None on an edge device that holds only channel files.

    A store that is named (--store, $SHADOW_STORE) or whose database file is
    here must open: otherwise damaging or renaming shadow.db would switch off
    "serve only what the store recorded", so that refuses to start instead.
    Only "no store named and no database file" is edge mode.
    """
    from selection.errors import ConfigError, ShadowError

    url = args.store or os.environ.get(STORE_ENV) or None
    db_path = Home.resolve(args.home).db_path
    where = url if url is not None else str(db_path)
    if url is None and not db_path.is_file():
        return None  # an edge device: the runtime's own checks are all there is
    try:
        return open_store(args)
    except MissingExtraError:
        if url is not None:
            raise  # a named store cannot be checked without its dependencies: refuse
        # An edge install (no store extra) with a copied home: the install, not
        # the file, decides, and nobody who can only write files can uninstall it.
        return None
    except ShadowError as exc:
        raise ConfigError(
            f"the store {where} could not be opened ({exc}); serve refuses to start without "
            "the store it was given, since the store decides which version may be served; "
            "fix or restore it (`shadow doctor`), or point --home/--store at a working one"
        ) from None


def _edge_checks(keys: object) -> str:
    """The checks that apply without a store, for the serving line."""
    return ("; no store: runtime checks only (link inside channels/, sha256, no external data)"
            + ("" if keys is None else " plus manifest signatures"))


def _limits(args: argparse.Namespace) -> ServerLimits:
    """The server's limits from the flags, each checked with the flag's name in the message."""
    from selection.errors import ConfigError

    for flag, value in (("--idle-timeout", args.idle_timeout),
                        ("--request-timeout", args.request_timeout)):
        if not 0.01 <= value <= 3600:
            raise ConfigError(f"{flag} must be in 0.01..3600 seconds; got {value:g}; e.g. 5")
    if not 1 <= args.max_connections <= 100_000:
        raise ConfigError(f"--max-connections must be in 1..100000; got {args.max_connections}; "
                          "e.g. 1024")
    return ServerLimits(idle_timeout_s=args.idle_timeout, request_timeout_s=args.request_timeout,
                        max_connections=args.max_connections)


def _warn_if_files_lag(store: Store, channel: str) -> None:
    """Say so when the channel's files lag the database (an interrupted change).

    The version served must still be one the store recorded (the verifier
    refuses anything else); only being behind is tolerated.
    """
    from selection.channels.files import channel_target
    from selection.channels.layout import UntrustedChannelError
    from selection.channels.promotion import current, in_sync
    from selection.channels.trust import known_version

    record = current(store, channel)
    if record is None or in_sync(store, record):
        return
    try:
        known_version(store, channel, channel_target(store.home, channel) or "")
    except UntrustedChannelError:
        return  # not behind but unknown: the verifier refuses it at start, in one line
    note(f"warning: channel '{channel}' files lag the database (history row "
         f"{record.history_id}, candidate {record.candidate_id}); run "
         "`shadow doctor --repair`; serving the older version the files hold")


def _log_event(event: RuntimeEvent) -> None:
    if event.kind == "swapped":
        note(f"swapped to candidate {event.candidate_id} (sha256 {(event.sha256 or '')[:12]}, "
             f"was {event.previous_candidate_id}; loaded in {event.load_ms:.1f} ms)")
    elif event.kind in ("refused", "missing"):
        note(f"{event.kind}: {event.detail}; still serving the previous model")
