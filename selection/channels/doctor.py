"""``shadow doctor``: check that the store, the channel files and the artifacts agree.

The database is the source of truth, so every channel problem is repairable
from it (:func:`repair` re-materializes the channel under its lock) as long
as the artifact it names still verifies; a bad artifact is reported with the
way out (restore it, or promote another candidate). History is never edited:
repairs only rewrite files.

A channel is healthy only if its link resolves inside ``channels/.versions``
to the version of the channel's current history row, its model is a regular
file with the sha256 that row recorded and no external-data tensor, and its
manifest says what the store says (``selection.channels.trust``). A link
re-pointed outside the home, a version the store never recorded and an
edited manifest all fail, and ``--repair`` restores what the history says.
When the home has a signing key (``selection.signing``), the manifest must
also carry a valid signature by it: a missing or invalid ``manifest.sig``
fails (apps given the public key would refuse the version), one by a key
retired by ``shadow keys init --rotate`` warns; ``--repair`` signs it again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from selection.artifacts.content import sha256_bytes
from selection.artifacts.external_data import ExternalDataError, external_tensors
from selection.channels.files import (
    MANIFEST_FILE,
    MODEL_FILE,
    channel_lock,
    leftovers,
    version_name,
)
from selection.channels.layout import UntrustedChannelError, read_regular, resolve_channel
from selection.channels.promotion import history, list_channels, sync_channel
from selection.channels.trust import known_version, manifest_problems
from selection.errors import ShadowError
from selection.records import PromotionRecord
from selection.signing import (
    SIGNATURE_FILE,
    KeyPaths,
    ManifestSignatureError,
    SigningKeyError,
    TrustedKeys,
    load_signing_key,
    retired_keys,
    verify_version,
)
from selection.store import Store
from selection.store.engine import stored_version
from selection.store.schema import SCHEMA_VERSION

Status = Literal["ok", "warn", "fail", "fixed"]


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report; ``fix`` says what to do when it is not ok."""

    check: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def diagnose(store: Store) -> list[Finding]:
    """Every check, read-only. ``fail`` means production or its audit trail is at risk."""
    findings = [_schema(store)]
    channels = list_channels(store)
    rows = history(store)
    for record in channels:
        findings.append(_channel_files(store, record))
        own = [r for r in rows if r.channel == record.channel]
        findings.append(_history_chain(record.channel, own, record))
    findings += _stray_channels(store, {r.channel for r in channels})
    findings.append(_artifacts(store))
    junk = leftovers(store.home)
    findings.append(Finding(
        "leftovers", "warn" if junk else "ok",
        f"{len(junk)} temporary entries from interrupted changes" if junk else "no temporary files",
        "`shadow doctor --repair` deletes them" if junk else None,
    ))
    return findings


def repair(store: Store) -> list[Finding]:
    """Make every channel's files match the database and delete leftovers; then re-check.

    Returns what was done (``fixed``) followed by a fresh :func:`diagnose`.
    """
    done: list[Finding] = []
    for finding in diagnose(store):
        if finding.status not in ("warn", "fail"):
            continue
        if finding.check.startswith("channel ") and finding.check.endswith(" files"):
            channel = finding.check.split()[1]
            try:
                sync_channel(store, channel)
            except ShadowError as exc:
                done.append(Finding(finding.check, "fail", f"could not repair: {exc}"))
            else:
                done.append(Finding(finding.check, "fixed",
                                    "rewrote the channel's files from the database"))
    removed = _remove_leftovers(store, {r.channel for r in list_channels(store)})
    if removed:
        done.append(Finding("leftovers", "fixed", f"deleted {removed} temporary entries"))
    return done + diagnose(store)


def _schema(store: Store) -> Finding:
    with store.snapshot() as conn:
        version = stored_version(conn)
    return Finding("store", "ok", f"{store.url} opens; schema version {version} "
                   f"(this code: {SCHEMA_VERSION})")


def _channel_files(store: Store, record: PromotionRecord) -> Finding:
    """Does ``channels/<name>`` show exactly the model and manifest the database says?"""
    check = f"channel {record.channel} files"
    link = store.home.channel_dir(record.channel)
    expected = version_name(record.channel, record.history_id, record.sha256)
    fix = "`shadow doctor --repair` rewrites them from the database"
    says = f"the database says history row {record.history_id} (candidate {record.candidate_id})"
    if not link.is_symlink():
        what = "missing" if not link.exists() else "not a symlink"
        return Finding(check, "fail", f"{link} is {what}; {says}", fix)
    try:
        version = resolve_channel(store.home.channels_dir, record.channel)
    except UntrustedChannelError as exc:
        return Finding(check, "fail", f"{exc}; {says}", fix)
    assert version is not None  # the link exists: checked above
    if version.name != expected:
        try:
            known_version(store, record.channel, version.name)
        except UntrustedChannelError:
            why = "a version the database never recorded for this channel (hand-made or copied)"
        else:
            why = "an interrupted change left the files behind"
        return Finding(check, "fail", f"{link} points at {version.name}, but the database's "
                       f"current row is {record.history_id} (candidate {record.candidate_id}, "
                       f"{expected}); {why}", fix)
    return _version_files(store, record, version, check, fix)


def _version_files(store: Store, record: PromotionRecord, version: Path, check: str,
                   fix: str) -> Finding:
    """The files of the current version: regular, the recorded model, self-contained, manifest."""
    try:
        model = read_regular(version / MODEL_FILE)
        manifest_bytes = read_regular(version / MANIFEST_FILE)
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (OSError, ValueError) as exc:
        links = [n for n in (MODEL_FILE, MANIFEST_FILE) if os.path.islink(version / n)]
        what = f"{', '.join(links)} must be regular files, not symlinks" if links else exc
        return Finding(check, "fail", f"{version} is damaged ({what})", fix)
    if sha256_bytes(model) != record.sha256:
        return Finding(check, "fail", f"{version / MODEL_FILE} does not hash to {record.sha256} "
                       "(tampered with or truncated)", fix)
    try:
        external = external_tensors(model, f"{version / MODEL_FILE}")
        unsafe = (f"has {len(external)} tensor(s) stored in other files (first: "
                  f"{external[0].name!r} -> {external[0].location!r}); loading it would read "
                  "them, so every loader refuses it") if external else ""
    except ExternalDataError as exc:  # nested too deep to check: refused unchecked
        unsafe = f"cannot be checked for tensors stored in other files ({exc})"
    if unsafe:
        return Finding(check, "fail", f"{version / MODEL_FILE} (artifact {record.sha256[:12]}) "
                       f"{unsafe}",
                       "the artifact itself is unsafe, so --repair cannot fix it: roll back "
                       f"(`shadow rollback --channel {record.channel}`) or promote another "
                       "candidate")
    if not isinstance(manifest, dict):
        return Finding(check, "fail", f"{version / MANIFEST_FILE} must hold a JSON object", fix)
    identity, other = manifest_problems(store, record, manifest, len(model))
    if identity:
        return Finding(check, "fail", f"{version / MANIFEST_FILE} does not describe history row "
                       f"{record.history_id} as the database does: its {', '.join(identity)} "
                       "differ (edited by hand?)", fix)
    signed = _signature(store, version, manifest_bytes, check)
    if signed is not None and signed.status == "fail":
        return signed
    if other:
        return Finding(check, "warn", f"{version / MANIFEST_FILE} differs from what the database "
                       f"records in {', '.join(other)} (written by an older version, or edited)",
                       fix)
    if signed is not None and signed.status == "warn":
        return signed
    return Finding(check, "ok", f"candidate {record.candidate_id} (row {record.history_id}, "
                   f"sha256 {record.sha256[:12]}) verifies"
                   + (f"; {signed.detail}" if signed is not None else ""))


def _signature(store: Store, version: Path, manifest_bytes: bytes, check: str) -> Finding | None:
    """Is the manifest signed by the home's key? None when the home has no key (never signed)."""
    paths = KeyPaths.of(store.home.root)
    if not paths.exists():
        return None
    fix = "`shadow doctor --repair` signs it again with the home's key"
    try:
        current = load_signing_key(paths).public
        known = TrustedKeys([current, *retired_keys(paths).values()])
    except SigningKeyError as exc:
        return Finding(check, "fail", str(exc), "fix the key file as it says, then run "
                       "`shadow doctor --repair`")
    if not (version / SIGNATURE_FILE).exists() and not os.path.islink(version / SIGNATURE_FILE):
        return Finding(check, "fail", f"{version / SIGNATURE_FILE} is missing: the manifest is "
                       "unsigned, so apps that check signatures refuse this version", fix)
    try:
        signer = verify_version(version, known, manifest_bytes=manifest_bytes)
    except ManifestSignatureError as exc:
        return Finding(check, "fail", f"{exc}".split("; refusing")[0] + "; apps that check "
                       "signatures refuse this version", fix)
    if signer.key_id != current.key_id:
        return Finding(check, "warn", f"{version / SIGNATURE_FILE} is signed by the retired key "
                       f"{signer.key_id}; apps that trust only the current key {current.key_id} "
                       "refuse it", "`shadow doctor --repair` re-signs it with the current key")
    return Finding(check, "ok", f"signed by key {current.key_id}")


def _history_chain(channel: str, rows: list[PromotionRecord], now: PromotionRecord) -> Finding:
    """Each row's "previous" is the state the row before it set; the newest is the current one."""
    check = f"channel {channel} history"
    ordered = sorted(rows, key=lambda r: r.history_id)
    fix = ("the history is append-only and was edited outside shadow: restore the database "
           "from a backup")
    for before, after in zip(ordered, ordered[1:]):
        replaced = (after.previous_candidate_id, after.previous_sha256)
        if replaced != (before.candidate_id, before.sha256):
            return Finding(check, "fail", f"row {after.history_id} says it replaced "
                           f"{after.previous_candidate_id}, but row {before.history_id} set "
                           f"{before.candidate_id}", fix)
    if not ordered or ordered[-1].history_id != now.history_id:
        return Finding(check, "fail", f"the channel row points at history row {now.history_id}, "
                       "which is not the channel's newest row", fix)
    return Finding(check, "ok", f"{len(ordered)} rows, each continuing the one before")


def _stray_channels(store: Store, known: set[str]) -> list[Finding]:
    channels = store.home.channels_dir
    if not channels.is_dir():
        return []
    stray = sorted(p.name for p in channels.iterdir()
                   if not p.name.startswith(".") and p.name not in known)
    return [Finding(f"channel {name} files", "warn", f"{channels / name} exists but the database "
                    "has no such channel (another store's, or hand-made)",
                    "point --store/--home at the right store, or move it away") for name in stray]


def _artifacts(store: Store) -> Finding:
    root = store.artifacts.root
    if not root.is_dir():
        return Finding("artifacts", "ok", "no artifacts stored yet")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    bad = [p.name for p in files if sha256_bytes(p.read_bytes()) != p.name]
    if bad:
        return Finding("artifacts", "fail", f"{len(bad)} of {len(files)} artifacts do not hash to "
                       f"their name: {', '.join(b[:12] for b in bad[:5])}",
                       "restore them from a backup or re-run their sweep; they cannot be promoted "
                       "as is")
    return Finding("artifacts", "ok", f"{len(files)} artifacts verify against their sha256")


def _remove_leftovers(store: Store, channels: Iterable[str]) -> int:
    """Delete leftovers while holding every channel's lock, so no change is mid-flight."""
    removed = 0
    with ExitStack() as stack:
        for name in sorted(channels):
            stack.enter_context(channel_lock(store.home, name))
        for path in leftovers(store.home):
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
