"""Whether a channel's files are ones the store vouches for.

The store is the source of truth, so with a store at hand a channel version is
trusted only if it is the version of a history row *of that channel*, its
model has the sha256 that row recorded, and its manifest says what the store
says (row, candidate, device, signature). ``shadow doctor`` reports anything
else, ``doctor --repair`` rewrites it from the history, and ``shadow serve``
refuses to load it (at start and on every hot swap, through
:func:`store_verifier`).

Without a store (an edge device holding only ``channels/``), the check that
stands in for this one is the manifest's signature (``selection.signing``,
``ChannelRuntime(trusted_keys=...)``): it proves the home's key wrote the
manifest, though not that it is the newest; the two checks combine when both
are available (``shadow serve --trust-key`` with a store).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from selection.channels.files import build_manifest, encode_manifest
from selection.channels.layout import UntrustedChannelError, version_name
from selection.records import PromotionRecord
from selection.signature import SIGNATURE_KEY, ModelSignature, SignatureError
from selection.store import Store
from selection.store import channel_rows as queries

#: Manifest keys a wrong value of which would serve or describe another model than the store's.
IDENTITY_KEYS = ("channel", "history_id", "candidate_id", "device", "sha256")


class ServedModel(Protocol):
    """What :func:`store_verifier` reads of a loaded model (``runtime.LoadedModel``)."""

    # Read-only members, so a frozen LoadedModel satisfies the protocol.
    @property
    def version(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def manifest(self) -> dict[str, Any]: ...


def known_version(store: Store, channel: str, version: str) -> PromotionRecord:
    """The history row of ``channel`` whose version directory is named ``version``.

    UntrustedChannelError if no row of this channel has that version (a
    hand-made or copied folder, or another channel's version).
    """
    match = re.fullmatch(rf"{re.escape(channel)}-(\d+)-[0-9a-f]{{12}}", version)
    row = None
    if match:
        with store.snapshot() as conn:
            row = queries.get_promotion(conn, int(match[1]))
    if row is None or row.channel != channel or version_name(
            channel, row.history_id, row.sha256) != version:
        raise UntrustedChannelError(
            f"channel {channel!r} may only serve a version the store recorded; {version!r} is "
            f"no history row of {channel!r} in the store at {store.url}; refusing it; run "
            "`shadow doctor --repair` to point the channel back at its history")
    return row


def manifest_problems(store: Store, record: PromotionRecord, manifest: Mapping[str, Any],
                      size_bytes: int) -> tuple[list[str], list[str]]:
    """How ``manifest`` differs from the one the store writes for ``record``.

    Returns ``(identity, other)``: keys whose difference changes which model
    or contract is served (``IDENTITY_KEYS`` and the signature), and keys that
    differ only in what they describe (metrics, who, when).
    """
    candidate = store.get_candidate(record.candidate_id)
    result = candidate.device(record.device)
    expected = json.loads(encode_manifest(build_manifest(record, candidate, result, size_bytes))) \
        if result is not None else {}
    identity = [k for k in IDENTITY_KEYS if manifest.get(k) != getattr(record, k, None)]
    if _signature(manifest.get(SIGNATURE_KEY)) != _signature(expected.get(SIGNATURE_KEY)):
        identity.append(SIGNATURE_KEY)
    other = sorted(k for k in set(expected) | set(manifest)
                   if k not in IDENTITY_KEYS and k != SIGNATURE_KEY
                   and manifest.get(k) != expected.get(k))
    return identity, other


def store_verifier(store: Store, channel: str) -> Callable[[ServedModel, ServedModel | None], None]:
    """A ``ChannelRuntime(verify=...)`` check: serve only what the store recorded.

    Accepts a version only if it is a history row of ``channel`` whose sha256
    the model has and whose identity the manifest states; and, on a swap, not
    a row older than the one serving (a link moved back to a retired model is
    refused; a rollback is a new row). Raises UntrustedChannelError.
    """

    def verify(model: ServedModel, serving: ServedModel | None) -> None:
        row = known_version(store, channel, model.version)
        if model.sha256 != row.sha256:
            raise UntrustedChannelError(
                f"{model.version} must hold the model the store recorded for history row "
                f"{row.history_id} (sha256 {row.sha256}); it holds {model.sha256}; refusing it; "
                "run `shadow doctor --repair`")
        # size_bytes feeds only the descriptive keys, which this check discards; so
        # anything but a real int (a string, a list, 1e400, a bool) counts as 0, never a crash.
        size = model.manifest.get("size_bytes")
        size_bytes = size if isinstance(size, int) and not isinstance(size, bool) else 0
        identity, _ = manifest_problems(store, row, model.manifest, size_bytes)
        if identity:
            raise UntrustedChannelError(
                f"the manifest of {model.version} must describe history row {row.history_id} as "
                f"the store does; its {', '.join(identity)} differ; refusing it; run "
                "`shadow doctor --repair`")
        before = serving.manifest.get("history_id") if serving is not None else None
        if isinstance(before, int) and row.history_id < before:
            raise UntrustedChannelError(
                f"channel {channel!r} moves only forward in its history: it serves row {before} "
                f"and its link now leads to the older row {row.history_id} ({model.version}); "
                "refusing it (a rollback is a new row: `shadow rollback`); run "
                "`shadow doctor --repair`")

    return verify


def _signature(data: Any) -> ModelSignature | None | str:
    """The parsed signature, for comparing two manifests regardless of spelling."""
    if data is None:
        return None
    try:
        return ModelSignature.from_dict(data)
    except SignatureError as exc:
        return f"invalid: {exc}"
