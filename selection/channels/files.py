"""The on-disk form of a channel: what an edge app reads.

Layout under ``$SHADOW_HOME/channels``::

    production -> .versions/production-7-0123456789ab/   (a symlink)
    .versions/production-7-0123456789ab/model.onnx
    .versions/production-7-0123456789ab/manifest.json
    .versions/production-7-0123456789ab/manifest.sig    (Ed25519, selection.signing)

A version directory is built completely (model bytes verified, manifest
written and signed with the home's key, all fsynced) *before* the channel symlink is swapped to it in one
atomic rename, so ``channels/production/model.onnx`` and its manifest always
change together and a reader never sees a partial or missing model. Old
version directories are kept: they are small next to the artifacts they copy
and let ``shadow doctor`` repair or audit a channel.

The database is the source of truth; this module only makes the files match
a history row (see ``promotion.sync_channel``). File names and the rule for
following a channel link live in :mod:`selection.channels.layout` (shared
with the edge runtime); the manifest's ``model_io`` is written by
:class:`selection.signature.ModelSignature`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

from selection.artifacts.content import ArtifactStore, sha256_bytes
from selection.artifacts.external_data import check_self_contained
from selection.atomic import (
    exclusive_lock,
    fsync_dir,
    replace_symlink_atomic,
    write_bytes_atomic,
)
from selection.channels.layout import (
    MANIFEST_FILE,
    MODEL_FILE,
    VERSIONS_DIR,
    UntrustedChannelError,
    resolve_channel,
    version_name,
)
from selection.errors import IntegrityError, PromotionError, StoreError
from selection.home import Home
from selection.records import CandidateRecord, DeviceResult, PromotionRecord
from selection.signature import SIGNATURE_KEY, ModelSignature
from selection.signing import SIGNATURE_FILE, KeyPaths, encode_signature, ensure_signing_key
from selection.store.rows import encode_dt

__all__ = [
    "MANIFEST_FILE", "MODEL_FILE", "VERSIONS_DIR", "build_manifest", "channel_lock",
    "channel_target", "check_channel_paths", "encode_manifest", "leftovers", "materialize", "point_channel",
    "prepare_version", "read_manifest", "read_verified_model", "version_name",
]


def build_manifest(
    record: PromotionRecord,
    candidate: CandidateRecord,
    result: DeviceResult,
    size_bytes: int,
) -> dict[str, Any]:
    """The manifest that sits beside the model of the state ``record`` set.

    Deterministic for a given history row, so re-materializing a version
    writes identical bytes.
    """
    manifest: dict[str, Any] = {
        "channel": record.channel,
        "candidate_id": candidate.candidate_id,
        "sweep_id": candidate.sweep_id,
        "device": record.device,
        "sha256": record.sha256,
        "size_bytes": size_bytes,
        "metrics": {
            "accuracy": result.accuracy,
            "latency_ms": result.latency_ms,
            "host_latency_p50_ms": result.host_latency_p50_ms,
            "host_latency_p99_ms": result.host_latency_p99_ms,
            "size_bytes": result.size_bytes,
            "emulator": result.emulator,
            "extra": result.extra,
        },
        "promoted_at": encode_dt(record.at),
        "promoted_by": record.who,
        "reason": record.reason,
        "action": record.action,
        "history_id": record.history_id,
    }
    if candidate.refit_of:
        # Its metrics above are in-sample (it trained on the holdout); the parent's are not.
        manifest["refit_of"] = candidate.refit_of
    signature = ModelSignature.from_lineage(candidate.lineage)
    if signature is not None:
        # How an edge app feeds the model: input name, feature columns, labels.
        manifest[SIGNATURE_KEY] = signature.to_dict()
    return manifest


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """The manifest file's bytes (sorted keys, indented, trailing newline)."""
    return (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode("utf-8")


def materialize(
    home: Home,
    artifacts: ArtifactStore,
    record: PromotionRecord,
    candidate: CandidateRecord,
    result: DeviceResult,
) -> Path:
    """Make ``channels/<channel>`` show the model and manifest of history row ``record``.

    ``candidate``/``result`` are the candidate and device result ``record``
    names. Idempotent: :func:`prepare_version` then :func:`point_channel`.
    Returns the version directory. Raises IntegrityError/NotFoundError if the
    artifact is bad or gone, before anything a reader sees changes.
    """
    final = prepare_version(home, artifacts, record, candidate, result)
    point_channel(home, record.channel, final)
    return final


def prepare_version(
    home: Home,
    artifacts: ArtifactStore,
    record: PromotionRecord,
    candidate: CandidateRecord,
    result: DeviceResult,
) -> Path:
    """Build (or repair) the version directory of history row ``record``; returns it.

    Reuses the directory if it exists, rewriting any file that differs (a
    half-written or tampered leftover, or one built by a transaction that
    never committed and whose history id was reused); otherwise builds it
    under a temporary name and renames it into place. No reader sees it until
    :func:`point_channel` swaps the channel link, so promotion builds it
    *inside* its database transaction and only the one-rename swap is left
    after the commit.
    """
    model = read_verified_model(artifacts, record.sha256)
    manifest_bytes = encode_manifest(build_manifest(record, candidate, result, len(model)))
    # Signed here, so every writer (promote, rollback, sync, --repair) signs; the
    # home's key is created on first use. Deterministic: a repair rewrites nothing.
    signature = encode_signature(manifest_bytes, ensure_signing_key(KeyPaths.of(home.root))[0])
    versions = home.channels_dir / VERSIONS_DIR
    if versions.is_symlink():  # as check_channel_paths refuses; never write through it
        raise StoreError(f"{versions} must be a real folder, not a symlink; remove the link, "
                         "then retry")
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / version_name(record.channel, record.history_id, record.sha256)
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        # Never write through a link: a version entry re-pointed outside the home
        # would have us write there. Drop the entry and build the real folder.
        final.unlink()
    if final.is_dir():
        _repair(final, record.sha256, model, manifest_bytes, signature)
    else:
        _build(versions, final, model, manifest_bytes, signature)
    return final


def read_verified_model(artifacts: ArtifactStore, sha256: str) -> bytes:
    """The model artifact ``sha256``, verified, and refused if it is not one self-contained file.

    IntegrityError (ExternalDataError) if a tensor of it points at another
    file: a channel never ships a model that would make its loader read one.
    """
    model = artifacts.read_verified(sha256)
    check_self_contained(model, f"artifact {sha256[:12]}")
    return model


def check_channel_paths(home: Home, channel: str) -> None:
    """Raise StoreError unless a change of ``channel`` can write its files; changes nothing.

    Promotion commits its history row before it swaps the channel link, so
    whatever would make the swap (or the version directory, or the lock)
    fail must be found *before* the transaction: a plain directory or file
    where the channel's symlink goes, a file where ``channels/`` or
    ``.versions/`` goes, a folder this user cannot write to.
    """
    link = home.channel_dir(channel)
    if link.exists() and not link.is_symlink():
        raise _not_a_link(link)
    versions = home.channels_dir / VERSIONS_DIR
    if versions.is_symlink():
        # Writing "inside" it would write wherever it leads (another home's versions).
        raise StoreError(
            f"{versions} must be a real folder, not a symlink (-> {os.readlink(versions)}); "
            f"cannot change channel {channel!r}; nothing was changed; remove the link (move "
            "the folder it leads to back if it is this home's), then retry")
    for folder in (home.root, home.channels_dir, versions):
        if folder.exists() and not folder.is_dir():
            raise StoreError(
                f"{folder} must be a folder shadow manages, but it is a file; nothing was "
                "changed; move it away, then retry (`shadow doctor --repair` recreates channels)"
            )
    # The deepest folder that exists is where the lock, versions and link get created.
    existing = next(f for f in (versions, home.channels_dir, home.root, *home.root.parents)
                    if f.is_dir())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot change channel {channel!r}: {existing} is not writable by this user; "
            "nothing was changed; make it writable (or run as the home's owner) and retry"
        )


def _not_a_link(link: Path) -> StoreError:
    return StoreError(
        f"{link} must be the symlink shadow manages, but it is a "
        f"{'directory' if link.is_dir() else 'file'}; nothing was changed; move it away, then "
        "run `shadow doctor --repair` to recreate the channel"
    )


def point_channel(home: Home, channel: str, version_dir: Path) -> None:
    """Swap ``channels/<channel>`` to ``version_dir`` in one atomic rename (no-op if it is there)."""
    link = home.channel_dir(channel)
    target = Path(VERSIONS_DIR) / version_dir.name  # relative, so the home can be moved
    if link.is_symlink():
        if Path(os.readlink(link)) != target:
            replace_symlink_atomic(link, target)
    elif link.exists():
        raise _not_a_link(link)
    else:
        replace_symlink_atomic(link, target)


def channel_target(home: Home, channel: str) -> str | None:
    """The version ``channels/<channel>`` leads to; None if no link or one leading elsewhere.

    Only a link that resolves inside ``channels/.versions`` names a version
    (``layout.resolve_channel``): a link re-pointed at a folder outside with
    the same name is no version of ours, so it never looks in sync.
    """
    try:
        version = resolve_channel(home.channels_dir, channel)
    except (UntrustedChannelError, OSError):
        return None
    return None if version is None else version.name


def channel_lock(home: Home, channel: str) -> AbstractContextManager[None]:
    """Exclusive, non-waiting lock on changing ``channel`` (PromotionError if held).

    Held from before the database transaction until after the link swap, so
    two promotions cannot interleave their commits and swaps (which could
    leave the files showing the older of two commits).
    """
    home.channels_dir.mkdir(parents=True, exist_ok=True)

    def busy(holder: str) -> PromotionError:
        return PromotionError(
            f"one change at a time per channel: channel {channel!r} is being changed by "
            f"another process ({holder}); nothing was changed by this command; wait for it "
            "to finish, check `shadow history`, and retry"
        )

    return exclusive_lock(home.channels_dir / f".{channel}.lock", busy)


def leftovers(home: Home) -> list[Path]:
    """Temporary entries an interrupted promotion left behind (safe to delete under the lock).

    Staging version directories, temporary symlinks and temporary model or
    manifest files; never a finished version (old versions are kept for audit).
    """
    channels = home.channels_dir
    if not channels.is_dir():
        return []
    found = [p for p in channels.glob(".*.tmp") if p.is_symlink()]
    versions = channels / VERSIONS_DIR
    if versions.is_dir():
        found += [p for p in versions.glob(".tmp-*") if p.is_dir()]
        found += list(versions.glob("*/.*.tmp"))
    return sorted(found)


def _build(versions: Path, final: Path, model: bytes, manifest_bytes: bytes,
           signature: bytes) -> None:
    """Write a version directory under a temporary name, then rename it to ``final``."""
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=versions))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; edge apps must read it
        write_bytes_atomic(staging / MODEL_FILE, model)
        write_bytes_atomic(staging / MANIFEST_FILE, manifest_bytes)
        write_bytes_atomic(staging / SIGNATURE_FILE, signature)
        os.rename(staging, final)
    except BaseException:
        with suppress(OSError):
            shutil.rmtree(staging)
        raise
    fsync_dir(versions)


def _repair(final: Path, sha256: str, model: bytes, manifest_bytes: bytes,
            signature: bytes) -> None:
    """Rewrite (atomically, file by file) whatever in ``final`` is not as expected."""
    # A symlinked file is rewritten too: os.replace swaps the entry, never its target.
    model_path = final / MODEL_FILE
    if not (_regular(model_path) and sha256_bytes(model_path.read_bytes()) == sha256):
        write_bytes_atomic(model_path, model)
    manifest_path = final / MANIFEST_FILE
    if not (_regular(manifest_path) and manifest_path.read_bytes() == manifest_bytes):
        write_bytes_atomic(manifest_path, manifest_bytes)
    # Missing (a folder from before signing), stale (the key was rotated) or forged: re-sign.
    signature_path = final / SIGNATURE_FILE
    if not (_regular(signature_path) and signature_path.read_bytes() == signature):
        write_bytes_atomic(signature_path, signature)


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def read_manifest(home: Home, channel: str) -> dict[str, Any] | None:
    """The manifest of ``channel`` as an edge app sees it, None if it has none.

    Raises IntegrityError if the file exists but is not a JSON object.
    """
    path = home.channel_dir(channel) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntegrityError(
            f"{path} must be a JSON manifest but does not parse ({exc}); "
            f"run `shadow doctor --repair` to rewrite it from the store"
        ) from None
    if not isinstance(manifest, dict):
        raise IntegrityError(
            f"{path} must hold a JSON object; got {type(manifest).__name__}; "
            "run `shadow doctor --repair` to rewrite it from the store"
        )
    return manifest
