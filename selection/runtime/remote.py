"""A channel fetched over HTTP into a local cache that is itself a channels folder (stdlib only).

The wire protocol between ``shadow fleet serve`` (``selection.fleet.server``)
and a device is defined here once, since the device side must stay slim:

- ``GET /v1/manifest?channel=<channel>`` with ``X-Shadow-Device`` (the
  device's id), ``X-Shadow-Running`` (the version it serves, or ``-``),
  optionally ``X-Shadow-Report`` (cumulative counts per model, see
  :func:`encode_report`), ``If-None-Match`` (the ETag of the offer it holds)
  and ``Authorization: Bearer <token>``. A 304 means "keep what you have"
  (an idle poll: one request line, a few headers, no body); a 200 is an
  :class:`Offer`: the version name, the manifest's exact bytes and its
  signature file, and where to fetch the model;
- ``GET /v1/artifact?sha256=<sha256>``: the model's bytes.

What is downloaded is trusted only once it verifies: the model streams into
a staging folder inside ``<cache>/.versions`` while it is hashed (a
truncated or altered body never gets a version folder's name), the manifest
is written byte for byte as signed, then the finished folder is loaded
with :func:`~selection.runtime.model.load_version` (sha256, the Ed25519
signature against the keys the device trusts, the channel binding, a smoke
inference). Only then does the cache's channel link swap to it (one atomic
rename). So the cache only ever points at a verified version, and a device
restarted without a network comes up on it: the cache *is* a channels folder
that :class:`~selection.runtime.ChannelRuntime` can serve as it is.

Never backwards: a signature proves who wrote a manifest, not that it is the newest one, so a
stale mirror or an attacker replaying an old, validly signed version (say one rolled back for a
bug) would otherwise be installed. Every legitimate change of a channel is a newer history row,
a rollback included (it is a new row that points at the older model), and a staged rollout only
ever moves a device forward (the canary share only grows). So a device refuses any offer whose
signed ``history_id`` is older than the one its cache already verified and points at (the
manifests are signed, so the row number cannot be forged either), and keeps serving what it has.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selection.atomic import fsync_dir, replace_symlink_atomic, write_bytes_atomic
from selection.channels.layout import MANIFEST_FILE, MODEL_FILE, VERSIONS_DIR, version_name
from selection.errors import ConfigError, ShadowError
from selection.runtime.model import LoadedModel, load_version
from selection.signing import SIGNATURE_FILE, PublicKey

MANIFEST_ROUTE = "/v1/manifest"
ARTIFACT_ROUTE = "/v1/artifact"
DEVICE_HEADER = "X-Shadow-Device"
RUNNING_HEADER = "X-Shadow-Running"
REPORT_HEADER = "X-Shadow-Report"
#: A device id: what the fleet view lists and the canary assignment hashes.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEVICE_ID_RULE = "1 to 64 characters of letters, digits and . _ : -, starting with a letter or digit"
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
#: Largest model a device downloads (a manifest announcing more is refused before any byte).
MAX_MODEL_BYTES = 2 * 1024 ** 3
_CHUNK = 64 * 1024
#: Version folders a device keeps (the one it serves included).
KEEP_VERSIONS = 3


class FetchError(ShadowError, OSError):
    """The server could not be reached, or answered something a device must not use."""


class Cancelled(FetchError):
    """A download or install stopped because its runtime is stopping (nothing was linked)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib would send the device's bearer token on to the new host."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        raise FetchError(f"the fleet server at {req.full_url.split('?')[0]} answered {code}, a "
                         f"redirect to {newurl[:200]!r}; a device follows no redirects (its "
                         "token would travel along); give the device the final URL")


def manifest_path(channel: str) -> str:
    """The path of a channel's offer on the fleet server."""
    return f"{MANIFEST_ROUTE}?channel={channel}"


def artifact_path(sha256: str) -> str:
    """The path of a model's bytes on the fleet server."""
    return f"{ARTIFACT_ROUTE}?sha256={sha256}"


def check_running(channel: str, running: str) -> str:
    """``running`` (the ``X-Shadow-Running`` header) if it is ``-`` or a version name of
    ``channel`` (``<channel>-<history id>-<12 hex>``, what promotion names a version), else
    ConfigError: the fleet view stores and prints it, so nothing else gets in."""
    if running == "-" or re.fullmatch(rf"{re.escape(channel)}-[0-9]{{1,18}}-[0-9a-f]{{12}}",
                                      running):
        return running
    raise ConfigError(f"{RUNNING_HEADER} must be '-' (no model yet) or the version name the "
                      f"device serves ({channel}-<history id>-<12 hex digits of its sha256>); "
                      f"got {running[:80]!r}")


def check_device_id(device_id: str) -> str:
    """``device_id`` if it follows :data:`DEVICE_ID_RULE`, else ConfigError."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise ConfigError(f"a device id must be {DEVICE_ID_RULE}; got {device_id!r}; "
                          "e.g. device_id='robot-17'")
    return device_id


@dataclass(frozen=True)
class Offer:
    """The version the server says this device should run, as it travels (the server's answer)."""

    version: str
    history_id: int
    sha256: str
    size_bytes: int
    manifest: bytes  # the exact bytes that were signed
    signature: bytes  # manifest.sig as written by promotion
    artifact: str
    etag: str

    def to_json(self) -> dict[str, Any]:
        """The answer body (the server builds it with this, the device reads it with :meth:`parse`)."""
        return {"version": self.version, "history_id": self.history_id, "sha256": self.sha256,
                "size_bytes": self.size_bytes,
                "manifest": base64.b64encode(self.manifest).decode("ascii"),
                "signature": base64.b64encode(self.signature).decode("ascii"),
                "artifact": self.artifact}

    @classmethod
    def parse(cls, body: bytes, channel: str, etag: str) -> Offer:
        """An offer from a 200 answer; FetchError for anything a device must not act on."""
        try:
            data = json.loads(body)
            version, history_id, sha = data["version"], data["history_id"], data["sha256"]
            size = data["size_bytes"]
            manifest = base64.b64decode(data["manifest"], validate=True)
            signature = base64.b64decode(data["signature"], validate=True)
            artifact = data["artifact"]
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError(f"the fleet server's offer for {channel!r} does not parse ({exc!r}); "
                             "is the URL a `shadow fleet serve`?") from None
        if not (isinstance(history_id, int) and isinstance(sha, str) and SHA_RE.match(sha)
                and isinstance(size, int) and 0 < size <= MAX_MODEL_BYTES):
            raise FetchError(f"the fleet server's offer for {channel!r} names no valid version "
                             f"(history_id {history_id!r}, sha256 {sha!r}, size {size!r})")
        # The name becomes a folder: it must be exactly the one promotion gives this row.
        if version != version_name(channel, history_id, sha) or artifact != artifact_path(sha):
            raise FetchError(f"the fleet server offered version {str(version)[:80]!r} for "
                             f"channel {channel!r}, which is not the name of history row "
                             f"{history_id} (sha256 {sha[:12]}); refusing it")
        return cls(version, history_id, sha, size, manifest, signature, artifact, etag)


def encode_report(counts: Mapping[str, tuple[int, int, int, int]]) -> str:
    """``{sha256: [predictions, errors, labelled, correct]}``, compact: the report header."""
    return json.dumps({sha: list(c) for sha, c in counts.items()}, separators=(",", ":"))


class FleetClient:
    """HTTP to one fleet server for one device (``urllib.request``: nothing to install)."""

    def __init__(self, url: str, channel: str, device_id: str, *, token: str | None = None,
                 timeout_s: float = 10.0) -> None:
        if not re.match(r"^https?://[^/\s]+/?$", url):
            raise ConfigError(f"the fleet URL must be http(s)://host:port; got {url!r}; "
                              "e.g. http://10.0.0.5:8780")
        self.url = url.rstrip("/")
        self.channel = channel
        self.device_id = check_device_id(device_id)
        self.token = token
        self.timeout_s = timeout_s
        # No proxies from the environment: a device talks to its fleet server directly.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                   _NoRedirects())

    def offer(self, etag: str | None, running: str | None,
              report: str | None = None) -> Offer | None:
        """The server's offer, None if it is ``etag`` still (304); FetchError otherwise."""
        headers = {RUNNING_HEADER: running or "-"}
        if etag:
            headers["If-None-Match"] = etag
        if report:
            headers[REPORT_HEADER] = report
        try:
            with self._open(manifest_path(self.channel), headers) as answer:
                body = answer.read(1024 * 1024)
                return Offer.parse(body, self.channel, answer.headers.get("ETag", ""))
        except FetchError:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return None
            raise FetchError(f"the fleet server answered {exc.code} for {self.channel!r}: "
                             f"{_error_text(exc)}") from None
        except (OSError, ValueError) as exc:  # URLError, reset, timeout, IncompleteRead
            raise FetchError(f"the fleet server at {self.url} could not be reached ({exc})") \
                from None

    def download(self, offer: Offer, dest: Path, cancel: threading.Event | None = None) -> None:
        """Stream the offer's model into ``dest`` (a new file), checking size and sha256 as it comes.

        ``cancel`` set (the runtime stopping) ends it between two chunks with :class:`Cancelled`.
        """
        digest, got = hashlib.sha256(), 0
        try:
            # Unbuffered: each chunk is on disk as it comes, so a half download is visible (and
            # what a kill leaves behind is what arrived, which the next start removes).
            with self._open(offer.artifact, {}) as answer, open(dest, "xb", buffering=0) as out:
                # read1: what has arrived (read() would wait for the whole chunk)
                while chunk := answer.read1(_CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"the download of {offer.version} stopped after {got} "
                                        "bytes: the runtime is stopping")
                    got += len(chunk)
                    if got > offer.size_bytes:
                        raise FetchError(f"the model of {offer.version} is longer than the "
                                         f"{offer.size_bytes} bytes its manifest announced")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            raise FetchError(f"the fleet server answered {exc.code} for the model of "
                             f"{offer.version}: {_error_text(exc)}") from None
        except FetchError:
            raise
        except (OSError, ValueError) as exc:
            raise FetchError(f"downloading the model of {offer.version} failed after {got} "
                             f"bytes ({exc})") from None
        if got != offer.size_bytes or digest.hexdigest() != offer.sha256:
            raise FetchError(f"the model of {offer.version} must be {offer.size_bytes} bytes "
                             f"hashing to {offer.sha256[:12]}; got {got} bytes hashing to "
                             f"{digest.hexdigest()[:12]} (corrupted or cut short); refusing it")

    def _open(self, path: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(self.url + path, headers={
            DEVICE_HEADER: self.device_id, **headers,
            **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        return self._opener.open(request, timeout=self.timeout_s)


def installed_history_id(cache_dir: Path, channel: str) -> int | None:
    """The signed history row of the version the cache's link points at (None: no version)."""
    link = cache_dir / channel
    try:
        target = os.readlink(link)
        manifest = json.loads((cache_dir / target / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    history_id = manifest.get("history_id") if isinstance(manifest, dict) else None
    return history_id if isinstance(history_id, int) and not isinstance(history_id, bool) else None


def refuse_older(cache_dir: Path, offer: Offer, channel: str) -> None:
    """FetchError if ``offer`` is not newer than what the cache holds (a replay; module doc)."""
    newest = installed_history_id(cache_dir, channel)
    if newest is None or offer.history_id > newest:
        return
    # The very version linked now: installing it again is harmless (a second follower of one
    # cache, or a re-fetch to repair it).
    with suppress(OSError):
        if os.path.basename(os.readlink(cache_dir / channel)) == offer.version:
            return
    if offer.history_id == newest:
        raise FetchError(f"refusing {offer.version}: it claims history row {offer.history_id} of "
                         f"{channel!r}, which this device already runs as another version; one "
                         "row has one model, so the fleet server's store is not the one that "
                         "signed it: check which store `shadow fleet serve` reads")
    raise FetchError(
        f"refusing {offer.version}: history row {offer.history_id} of {channel!r} is older than "
        f"row {newest}, which this device already verified and runs; a rollback is a new, newer "
        "row, so an older one is a replayed version (a stale mirror or an attack). Point the "
        "device at the fleet server of the current store; to start over on purpose, remove "
        f"{cache_dir / channel} and {cache_dir / VERSIONS_DIR}")


def install(client: FleetClient, cache_dir: Path, offer: Offer, *,
            trusted_keys: Mapping[str, PublicKey], threads: int = 1,
            cancel: threading.Event | None = None) -> LoadedModel:
    """Fetch ``offer`` into ``cache_dir``, verify it whole, then point the cache's link at it.

    Returns the verified model (loaded once, as a check; the runtime loads the
    folder again when it swaps). Raises FetchError or ModelLoadError and
    leaves the link where it was. ``cancel`` set: :class:`Cancelled` at the next
    chunk, and never a link moved after it was set (checked last, before the swap). An offer
    older than the version the cache holds is refused before any byte (:func:`refuse_older`).
    """
    refuse_older(cache_dir, offer, client.channel)
    versions = cache_dir / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / offer.version
    if not _complete(final):
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{offer.version}-", dir=versions))
        try:
            os.chmod(staging, 0o755)
            if not _copy_known(versions, offer, staging / MODEL_FILE):
                client.download(offer, staging / MODEL_FILE, cancel)
            write_bytes_atomic(staging / MANIFEST_FILE, offer.manifest)
            write_bytes_atomic(staging / SIGNATURE_FILE, offer.signature)
            if final.exists() or final.is_symlink():
                _remove(final)  # an incomplete leftover of an interrupted install
            os.rename(staging, final)
        except BaseException:
            _remove(staging)
            raise
        fsync_dir(versions)
    try:
        model = load_version(final, channel=client.channel, threads=threads,
                             trusted_keys=trusted_keys)
    except ShadowError:
        _remove(final)  # never keep a folder that did not verify under a version's name
        raise
    if cancel is not None and cancel.is_set():  # the folder verified: kept for the next start
        raise Cancelled(f"{offer.version} verified but was not linked: the runtime is stopping")
    replace_symlink_atomic(cache_dir / client.channel, Path(VERSIONS_DIR) / offer.version)
    prune(cache_dir, offer.version)
    return model


def prune(cache_dir: Path, current: str, keep: int = KEEP_VERSIONS) -> list[str]:
    """Remove all but the ``keep`` newest version folders (never ``current``); their names.

    The ones kept make a rollback a local copy instead of a download.
    """
    versions = cache_dir / VERSIONS_DIR
    found = sorted((p for p in versions.iterdir() if not p.name.startswith(".")
                    and p.name != current), key=lambda p: p.stat().st_mtime, reverse=True)
    dropped = [p.name for p in found[max(0, keep - 1):]]
    for name in dropped:
        _remove(versions / name)
    return dropped


def clean_staging(cache_dir: Path) -> int:
    """Remove staging folders a killed install left (at start, before anything else); how many."""
    versions = cache_dir / VERSIONS_DIR
    found = list(versions.glob(".tmp-*")) if versions.is_dir() else []
    for path in found:
        _remove(path)
    return len(found)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() and not (folder / name).is_symlink()
               for name in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE)) and not folder.is_symlink()


def _copy_known(versions: Path, offer: Offer, dest: Path) -> bool:
    """Copy the model from a cached version with the same sha256 (a rollback); True if done."""
    for folder in versions.glob(f"*-{offer.sha256[:12]}"):
        source = folder / MODEL_FILE
        if folder.name.startswith(".") or not source.is_file() or source.is_symlink():
            continue
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() == offer.sha256:
            write_bytes_atomic(dest, data)
            return True
    return False


def _remove(path: Path) -> None:
    with suppress(OSError):
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read(4096)).get("error", ""))[:300]
    except (ValueError, OSError, AttributeError):
        return exc.reason if isinstance(exc.reason, str) else "no detail"
