"""Which challengers ride along with a channel's champion as shadows, and loading them.

``shadow serve --shadows K`` / ``--shadow ID`` (and any embedder with a store)
call :func:`load_shadows`. The rules, in one place:

- ``--shadows K`` picks the top K eligible candidates on the champion's device
  (leaderboard rank) of the newest sweep *of the champion's dataset*: a newer
  sweep of another dataset trained models of other inputs, whose answers
  beside the champion's mean nothing;
- every shadow, picked or named, must take the champion's inputs and predict
  its classes: its signature's ``features`` and ``classes`` equal the
  champion's, else it is refused at start (a shadow of other columns would
  score numbers it was never trained on, one of other classes could never
  match a label);
- each shadow is the candidate's artifact for the champion's device (same
  numerics), verified against its sha256; the champion itself is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from selection.channels.promotion import artifact_for, current
from selection.errors import ConfigError
from selection.records import CandidateRecord
from selection.runtime.model import LoadedModel, load_model_bytes
from selection.runtime.shadows import MAX_SHADOWS
from selection.signature import ModelSignature
from selection.store import Store


def load_shadows(store: Store, channel: str, *, names: Sequence[str] | None = None,
                 k: int | None = None, threads: int = 1) -> list[LoadedModel]:
    """The shadows' models: ``names`` (at most ``k`` if given), else the top ``k``; verified."""
    now = current(store, channel)
    if now is None:
        raise ConfigError(f"channel {channel!r} has no champion in the store, so shadows "
                          "have nothing to ride along with; promote a model first")
    champion = store.get_candidate(now.candidate_id)
    dataset = store.get_sweep(champion.sweep_id).dataset
    ids = list(dict.fromkeys(names)) if names else top_k(store, now.device, champion, k or 0)
    if names and k is not None and len(ids) > k:
        raise ConfigError(f"--shadows {k} allows {k} shadows, but --shadow named {len(ids)}; "
                          "name fewer or raise --shadows")
    if len(ids) > MAX_SHADOWS:
        raise ConfigError(f"at most {MAX_SHADOWS} shadows; got {len(ids)}")
    theirs = _io(champion)
    models = []
    for cid in ids:
        candidate = store.get_candidate(cid)  # NotFoundError names it
        result = candidate.device(now.device)
        if result is None or result.status != "ok":
            raise ConfigError(
                f"shadow {cid!r} must have run ok on the champion's device {now.device!r} (same "
                f"numerics); it {'has no result there' if result is None else 'failed there'}; "
                f"pick one from `shadow leaderboard --device {now.device} --status ok`")
        sha = artifact_for(candidate, result) or ""
        if sha == now.sha256:
            continue  # the champion itself
        mine = _io(candidate)
        if mine != theirs:
            raise ConfigError(
                f"shadow {cid!r} must take the champion's inputs and predict its classes; it "
                f"has features {_show(mine[0])} and classes {_show(mine[1])}, the champion "
                f"{champion.candidate_id!r} features {_show(theirs[0])} and classes "
                f"{_show(theirs[1])}; pick a candidate of the champion's dataset "
                f"({dataset!r}) from `shadow leaderboard`")
        models.append(load_model_bytes(
            store.artifacts.read_verified(sha), candidate_id=cid, sha256=sha, channel=channel,
            signature=ModelSignature.from_lineage(candidate.lineage), threads=threads,
            where=f"shadow {cid} ({sha[:12]})"))
    return models


def top_k(store: Store, device: str, champion: CandidateRecord, k: int) -> list[str]:
    """The best ``k`` eligible candidates on ``device`` of the newest sweep of the champion's
    dataset, the champion left out."""
    from selection.leaderboard.frame import leaderboard  # pandas: only when picking

    if k <= 0:
        return []
    dataset = store.get_sweep(champion.sweep_id).dataset
    sweep = next((s.sweep_id for s in store.list_sweeps() if s.dataset == dataset), None)
    if sweep is None:
        return []
    frame = leaderboard(store, sweep=sweep, device=device, status="ok")
    if frame.empty:
        return []
    frame = frame[frame["eligible"].astype(bool)
                  & (frame["candidate_id"] != champion.candidate_id)]
    return [str(c) for c in frame.sort_values("rank")["candidate_id"].head(k)]


def _io(candidate: CandidateRecord) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(features, classes) of a candidate's recorded signature; (None, None) if it has none."""
    signature = ModelSignature.from_lineage(candidate.lineage)
    return (None, None) if signature is None else (signature.features, signature.classes)


def _show(names: tuple[str, ...] | None) -> str:
    if names is None:
        return "unnamed"
    if len(names) <= 6:
        return str(list(names))
    return f"[{', '.join(repr(n) for n in names[:5])}, ... ({len(names)} in all)]"
