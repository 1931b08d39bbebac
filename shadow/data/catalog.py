"""The dataset catalog: finding ``<name>/dataset.toml`` manifests by name.

Search order (first match wins): the folders in ``$SHADOW_CATALOG``
(``os.pathsep``-separated), ``./datasets`` and the ``datasets/`` folder beside
the installed source tree (an editable install or a clone).
"""

from __future__ import annotations

import os
from pathlib import Path

from shadow.data.manifest import DatasetManifest
from shadow.errors import NotFoundError

MANIFEST_NAME = "dataset.toml"


def catalog_dirs() -> list[Path]:
    """Existing catalog folders, in search order, without duplicates."""
    candidates: list[Path] = []
    env = os.environ.get("SHADOW_CATALOG", "")
    candidates += [Path(p) for p in env.split(os.pathsep) if p]
    candidates.append(Path.cwd() / "datasets")
    candidates.append(Path(__file__).resolve().parents[2] / "datasets")
    seen: set[Path] = set()
    found: list[Path] = []
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_dir() and resolved not in seen:
            seen.add(resolved)
            found.append(resolved)
    return found


def list_manifests() -> list[DatasetManifest]:
    """Every manifest in the catalog, by name; the first folder wins on a clash."""
    by_name: dict[str, DatasetManifest] = {}
    for folder in catalog_dirs():
        for path in sorted(folder.glob(f"*/{MANIFEST_NAME}")):
            manifest = DatasetManifest.from_file(path)
            by_name.setdefault(manifest.name, manifest)
    return [by_name[name] for name in sorted(by_name)]


def find_manifest(name_or_path: str, relative_to: Path | None = None) -> DatasetManifest:
    """A manifest by catalog name, or by path to a ``dataset.toml`` file.

    Paths are taken relative to ``relative_to`` (the sweep config's folder).
    """
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        return DatasetManifest.from_file(path)
    for folder in catalog_dirs():
        path = folder / name_or_path / MANIFEST_NAME
        if path.is_file():
            return DatasetManifest.from_file(path)
    known = ", ".join(m.name for m in list_manifests()) or "none"
    raise NotFoundError(
        f"unknown dataset {name_or_path!r}; the catalog has: {known}. "
        "List them with `shadow datasets`, or add datasets/<name>/dataset.toml "
        "(folders searched: $SHADOW_CATALOG, ./datasets, the project's datasets/)."
    )
