"""The registered model of a channel and its ``champion`` alias.

:func:`ensure_version` finds the model version registered for one shipped
artifact (by its ``shadow.sha256`` tag) or registers it from the MLflow model
logged for it; :func:`set_champion` points the alias at it and
:func:`drop_champion` removes it from a model the channel left. Both are
idempotent, so a promotion retried after a failure neither duplicates a
version nor leaves the alias behind. The store's history is the source of
truth: the alias is moved to follow it, never read back to decide anything.
"""

from __future__ import annotations

from typing import Any

from selection.tracking.client import calls
from selection.tracking.runs import TAG
from selection.tracking.settings import CHAMPION_ALIAS


def ensure_version(
    client: Any, uri: str, name: str, *, model_uri: str, run_id: str | None,
    candidate_id: str, sha: str, device: str,
) -> str:
    """The version of registered model ``name`` holding artifact ``sha``, registered if needed."""
    with calls(uri, f"finding registered model {name!r}"):
        if not _exists(client, name):
            try:
                client.create_registered_model(
                    name, tags={TAG + "kind": "channel"},
                    description="Versions promoted by shadow-sweep; the 'champion' alias follows the channel.")
            except Exception:  # registered by another process meanwhile
                if not _exists(client, name):
                    raise
        for version in _versions(client, name):
            if version.tags.get(TAG + "sha256") == sha and version.tags.get(TAG + "candidate_id") == candidate_id:
                return str(version.version)
    with calls(uri, f"registering a version of {name!r}"):
        model_id = model_uri.split("models:/", 1)[1] if model_uri.startswith("models:/m-") else None
        created = client.create_model_version(
            name, source=model_uri, run_id=run_id, model_id=model_id,
            tags={TAG + "candidate_id": candidate_id, TAG + "sha256": sha, TAG + "device": device},
        )
    return str(created.version)


def set_champion(client: Any, uri: str, name: str, version: str, *, channel: str, history_id: int) -> None:
    """Point ``name``'s ``champion`` alias at ``version`` and note which history row put it there."""
    with calls(uri, f"setting alias {CHAMPION_ALIAS!r} of {name!r} to version {version}"):
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        client.set_model_version_tag(name, version, TAG + "history_id", str(history_id))
        client.set_registered_model_tag(name, TAG + "channel", channel)


def drop_champion(client: Any, uri: str, name: str) -> None:
    """Remove ``name``'s ``champion`` alias, if it has one (the channel moved to another model)."""
    with calls(uri, f"removing alias {CHAMPION_ALIAS!r} of {name!r}"):
        if not _exists(client, name):
            return
        aliases = getattr(client.get_registered_model(name), "aliases", {}) or {}
        if CHAMPION_ALIAS in aliases:
            client.delete_registered_model_alias(name, CHAMPION_ALIAS)


def champion_version(client: Any, uri: str, name: str) -> str | None:
    """The version ``name``'s ``champion`` alias points at, None if it has none."""
    with calls(uri, f"reading alias {CHAMPION_ALIAS!r} of {name!r}"):
        model = client.get_registered_model(name) if _exists(client, name) else None
    if model is None:
        return None
    aliases = getattr(model, "aliases", {}) or {}
    value = aliases.get(CHAMPION_ALIAS)
    return None if value is None else str(value)


def _exists(client: Any, name: str) -> bool:
    return bool(client.search_registered_models(filter_string=f"name = '{name}'", max_results=1))


def _versions(client: Any, name: str) -> list[Any]:
    found: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found
