"""Dataset manifests: ``datasets/<name>/dataset.toml`` parsed and validated.

A manifest is data, not code: where the table comes from, which column is the
target, which are features, and that row order is time order. Nothing is read
from the table itself here; see :mod:`shadow.data.loader`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shadow.errors import ConfigError, DatasetError
from shadow.params import Param, check_known_keys, parse_table

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

_TOP = [
    Param("name", str),
    Param("title", str, default=""),
    Param("task", str, default="classification", choices=("classification",)),
    Param("target", str),
    Param("features", list),
    Param("order", str, default="row", choices=("row",), help="row order is time order"),
    Param("rows", int, default=None, low=1),
    Param("license", str, default=""),
    Param("citation", str, default=""),
]
_SOURCE_PACKAGE = [
    Param("kind", str, choices=("package",)),
    Param("package", str),
    Param("resource", str),
    Param("index_col", int, default=None, low=0),
]
_SOURCE_CSV = [
    Param("kind", str, choices=("csv",)),
    Param("path", str, help="relative to the manifest's folder"),
    Param("index_col", int, default=None, low=0),
]
_DRIFT = [Param("from_row", int, default=None, low=0), Param("note", str, default="")]


@dataclass(frozen=True)
class DatasetSource:
    """Where the table's bytes come from: a file in a package, or a CSV path."""

    kind: str
    location: str
    package: str | None = None
    index_col: int | None = None


@dataclass(frozen=True)
class DatasetManifest:
    """A validated ``dataset.toml``."""

    name: str
    title: str
    task: str
    target: str
    features: tuple[str, ...]
    order: str
    declared_rows: int | None
    license: str
    citation: str
    source: DatasetSource
    drift_from_row: int | None
    drift_note: str
    path: Path

    @classmethod
    def from_file(cls, path: Path) -> DatasetManifest:
        """Read and validate a manifest; raise ConfigError naming the file."""
        where = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"dataset manifest {where} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}. Fix the syntax.") from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> DatasetManifest:
        where = str(path)
        check_known_keys(raw, [p.name for p in _TOP] + ["source", "drift"], where)
        top = parse_table({k: v for k, v in raw.items() if k not in ("source", "drift")}, _TOP, where)
        if not _NAME.match(top["name"]):
            raise ConfigError(
                f"{where}: 'name' must be lower-case letters, digits, '-', '_' or '.'; "
                f"got {top['name']!r}."
            )
        features = top["features"]
        if not features or not all(isinstance(f, str) and f for f in features):
            raise ConfigError(f"{where}: 'features' must be a non-empty list of column names.")
        if len(set(features)) != len(features):
            raise ConfigError(f"{where}: 'features' lists a column twice: {features}.")
        if top["target"] in features:
            raise ConfigError(f"{where}: the target {top['target']!r} is also listed as a feature.")
        source = _parse_source(raw.get("source"), f"{where} [source]", path.parent)
        drift = parse_table(raw.get("drift", {}), _DRIFT, f"{where} [drift]")
        return cls(
            name=top["name"],
            title=top["title"],
            task=top["task"],
            target=top["target"],
            features=tuple(features),
            order=top["order"],
            declared_rows=top["rows"],
            license=top["license"],
            citation=top["citation"],
            source=source,
            drift_from_row=drift["from_row"],
            drift_note=drift["note"],
            path=path,
        )


def _parse_source(table: Any, where: str, base: Path) -> DatasetSource:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: missing [source] table (kind = \"package\" or \"csv\").")
    kind = table.get("kind")
    if kind == "package":
        s = parse_table(table, _SOURCE_PACKAGE, where)
        return DatasetSource("package", s["resource"], package=s["package"], index_col=s["index_col"])
    if kind == "csv":
        s = parse_table(table, _SOURCE_CSV, where)
        return DatasetSource("csv", str((base / s["path"]).resolve()), index_col=s["index_col"])
    raise ConfigError(f"{where}: 'kind' must be 'package' or 'csv'; got {kind!r}.")
